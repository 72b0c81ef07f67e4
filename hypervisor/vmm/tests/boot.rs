//! Boots a real guest kernel; slow, so ignored by default:
//!
//! ```text
//! WARD_VMM_KERNEL=/var/cache/ward/kernel/<hash>/vmlinux \
//! WARD_VMM_INITRD=build/guest/initrd.img \
//!   cargo test -p ward-vmm --test boot -- --ignored --nocapture
//! ```
//!
//! It checks what the kernel reports about the machine ward-vmm describes: both boot
//! vCPUs (MADT), the disk (virtio-mmio through ACPI), then powers the guest off through
//! the control socket (GED → orderly power-off → ACPI S5).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ward_vmm::config::{DeviceConfig, DiskConfig};
use ward_vmm::vmm::{Payload, Vmm, VmmConfig};
use ward_vmm::vstate::vcpu::ExitReason;

fn wait_for(log: &std::path::Path, text: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = std::fs::read_to_string(log).unwrap_or_default();
        if got.contains(text) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{text:?} not in the serial log after {timeout:?}; it ends with:\n{}",
            got.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "boots a real kernel: minutes on hosts that emulate guest ring 0"]
fn kernel_sees_the_machine_and_powers_off() {
    let kernel = PathBuf::from(std::env::var("WARD_VMM_KERNEL").expect("WARD_VMM_KERNEL"));
    let initrd = std::env::var("WARD_VMM_INITRD").ok().map(PathBuf::from);
    let dir = std::env::temp_dir().join(format!("ward-vmm-boot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 4 << 20]).unwrap();
    let serial = dir.join("serial.log");
    let sock = dir.join("api.sock");
    let vmm = Vmm::new(
        VmmConfig {
            payload: Payload::Linux {
                kernel,
                initrd,
                cmdline: String::new(),
            },
            vcpus: 2,
            max_vcpus: 4,
            memory_mib: 256,
            serial_log: serial.clone(),
            api_socket: Some(sock.clone()),
            devices: DeviceConfig {
                rng: true,
                vsock: None,
                disks: vec![DiskConfig {
                    id: "root".into(),
                    path: disk,
                    readonly: false,
                }],
                fs: vec![],
                nets: vec![],
            },
            acpi: true,
            emulated_ring0: false,
        },
        slog::Logger::root(slog::Discard, slog::o!()),
    )
    .unwrap();
    let runner = std::thread::spawn(move || vmm.run().unwrap());
    let slow = Duration::from_secs(600);
    let first = wait_for(&serial, "Linux version", slow);
    let cpus = wait_for(&serial, "smp: Brought up 1 node, 2 CPUs", slow);
    let vda = wait_for(&serial, "[vda] 8192 512-byte logical blocks", slow);
    eprintln!("first line {first:?}, 2 CPUs {cpus:?}, vda {vda:?}");

    let mut conn = UnixStream::connect(&sock).unwrap();
    conn.write_all(b"{\"op\":\"shutdown\",\"grace_ms\":300000}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(conn).read_line(&mut line).unwrap();
    assert!(line.contains("\"graceful\":true"), "{line}");
    let reason = runner.join().unwrap();
    // A guest whose init dies first reboots (panic=1) instead.
    assert!(
        matches!(reason, ExitReason::PowerOff | ExitReason::Reboot(_)),
        "{reason:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
