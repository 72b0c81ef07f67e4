//! Measuring how fast this host's KVM runs guest code, at guest ring 0 and ring 3.
//!
//! A working /dev/kvm does not mean hardware virtualization: on a PVM host, guest user code
//! runs natively while guest kernel code is emulated at roughly a million instructions a
//! second, and a kernel that boots in a second under TCG takes over a minute. So the probe
//! runs a counted loop in a throwaway VM and times it.

use std::sync::mpsc;
use std::time::Duration;

use kvm_ioctls::Kvm;

use super::loop_vm::{LoopVm, Ring};
use super::report::{measured, under_hypervisor, unusable, ProbeReport};

/// Beyond this the probe gives up on the throwaway VM.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the probe on this host; takes well under a second on hardware or PVM.
pub fn probe() -> ProbeReport {
    let present = std::path::Path::new("/dev/kvm").exists();
    let kvm = match Kvm::new() {
        Ok(kvm) => kvm,
        Err(e) => return unusable(present, None, format!("cannot open /dev/kvm: {e}")),
    };
    let api = kvm.get_api_version();
    // The VM runs in its own thread so that a guest that never exits cannot hang the
    // caller: after the timeout the thread is kicked out of KVM_RUN with a signal.
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            let outcome = LoopVm::new(&kvm).map(|mut vm| {
                let ring0 = vm.rate(Ring::Zero);
                let ring3 = vm.rate(Ring::Three);
                (ring0, ring3)
            });
            let _ = tx.send(outcome);
        });
    let worker = match worker {
        Ok(w) => w,
        Err(e) => {
            return unusable(
                true,
                Some(api),
                format!("cannot start the probe thread: {e}"),
            )
        }
    };
    let outcome = match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(outcome) => outcome,
        Err(_) => {
            kick(&worker);
            return unusable(
                true,
                Some(api),
                format!(
                    "the probe VM did not finish within {} s",
                    PROBE_TIMEOUT.as_secs()
                ),
            );
        }
    };
    let _ = worker.join();
    match outcome {
        Err(why) => unusable(true, Some(api), why),
        Ok((Err(why), _)) => unusable(true, Some(api), format!("ring-0 loop: {why}")),
        Ok((Ok(ring0), ring3)) => {
            // Unreadable cpuinfo only loses the nested/bare-metal distinction.
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            measured(api, ring0, ring3, under_hypervisor(&cpuinfo))
        }
    }
}

/// Interrupts a probe thread stuck in KVM_RUN (EINTR); a few times, since a signal that
/// arrives just before the ioctl is lost.
fn kick(worker: &std::thread::JoinHandle<()>) {
    use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};
    extern "C" fn ignore(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    // Only now, on this rare path, does the process get a handler: the default action of a
    // real-time signal would kill it.
    if register_signal_handler(SIGRTMIN(), ignore).is_err() {
        return;
    }
    for _ in 0..50 {
        if worker.is_finished() || worker.kill(SIGRTMIN()).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::KvmClass;

    /// The real thing, on the machine the tests run on; prints what it measured
    /// (`--nocapture`). Where the class is known, WARD_EXPECT_KVM_CLASS=emulated-ring0 (or
    /// hardware, nested, absent, unusable) makes it an assertion.
    #[test]
    fn probes_this_host() {
        let report = probe();
        eprintln!("accelerator probe: {report}");
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        eprintln!("{json}");
        if !std::path::Path::new("/dev/kvm").exists() {
            assert_eq!(report.class, KvmClass::Absent);
        }
        if let Ok(expected) = std::env::var("WARD_EXPECT_KVM_CLASS") {
            assert_eq!(report.class.to_string(), expected, "{report}");
        }
    }
}
