//! A few bytes of 64-bit machine code run on a real KVM vCPU: they print through the
//! UART into the serial log and reset the machine through the i8042, which must end
//! `Vmm::run` cleanly. Skipped where /dev/kvm is missing.

use std::time::{Duration, Instant};

use ward_vmm::vmm::{Payload, Vmm, VmmConfig};
use ward_vmm::vstate::vcpu::ExitReason;

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// mov dx, 0x3f8; for each byte: mov al, b; out dx, al; then mov al, 0xfe; out 0x64, al;
/// hlt (never reached).
fn print_and_reset(text: &[u8]) -> Vec<u8> {
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    for b in text {
        code.extend_from_slice(&[0xb0, *b, 0xee]);
    }
    code.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4]);
    code
}

fn run_payload(code: Vec<u8>, vcpus: u32) -> (ExitReason, Vec<u8>, Duration) {
    run_payload_with(code, vcpus, 32)
}

fn run_payload_with(code: Vec<u8>, vcpus: u32, memory_mib: u32) -> (ExitReason, Vec<u8>, Duration) {
    let dir = std::env::temp_dir().join(format!(
        "ward-vmm-payload-{}-{vcpus}-{memory_mib}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("serial.log");
    let vmm = Vmm::new(
        VmmConfig {
            payload: Payload::Raw { code, addr: 0x1000 },
            vcpus,
            max_vcpus: vcpus,
            memory_mib,
            serial_log: log.clone(),
            api_socket: None,
            devices: Default::default(),
            acpi: vcpus > 1,
            emulated_ring0: false,
        },
        logger(),
    )
    .unwrap();
    let start = Instant::now();
    let reason = vmm.run().unwrap();
    let took = start.elapsed();
    let out = std::fs::read(&log).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (reason, out, took)
}

#[test]
fn payload_prints_and_resets() {
    if !kvm_available() {
        eprintln!("skipped: no /dev/kvm");
        return;
    }
    let (reason, out, took) = run_payload(print_and_reset(b"ward\n"), 1);
    assert_eq!(reason, ExitReason::Reboot("i8042 reset"));
    assert_eq!(out, b"ward\n");
    eprintln!("payload ran in {took:?}");
}

#[test]
fn idle_secondary_vcpus_are_stopped() {
    if !kvm_available() {
        eprintln!("skipped: no /dev/kvm");
        return;
    }
    // The APs wait for a SIPI that never comes; stopping must still join them.
    let (reason, out, _) = run_payload(print_and_reset(b"x"), 3);
    assert_eq!(reason, ExitReason::Reboot("i8042 reset"));
    assert_eq!(out, b"x");
}

#[test]
fn memory_above_the_mmio_hole_is_mapped() {
    if !kvm_available() {
        eprintln!("skipped: no /dev/kvm");
        return;
    }
    // 4 GiB: 3 GiB below the hole, 1 GiB from 4 GiB up (two KVM memory slots).
    let (reason, out, _) = run_payload_with(print_and_reset(b"hi"), 1, 4096);
    assert_eq!(reason, ExitReason::Reboot("i8042 reset"));
    assert_eq!(out, b"hi");
}
