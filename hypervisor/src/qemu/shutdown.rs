//! Stopping a VM from its persisted record, possibly in another process than the one that
//! launched it. Every wait is bounded: QMP has timeouts, and `ProcessRecord::terminate`
//! ends in SIGKILL.

use std::time::{Duration, Instant};

use crate::{runfiles, Error, Result, VmInstance, VsockEndpoint};

use super::paths::RunPaths;
use super::qmp::QmpClient;

/// How long a process gets between SIGTERM and SIGKILL once `grace` is over.
const TERM_GRACE: Duration = Duration::from_secs(1);
/// The most a QMP exchange may take here, whatever `grace` is.
const QMP_TIMEOUT: Duration = Duration::from_secs(2);

pub fn shutdown(vm: &VmInstance, grace: Duration) -> Result<()> {
    let deadline = Instant::now() + grace;
    if let Some(qemu) = vm.processes.first().filter(|p| p.is_alive()) {
        // A gone or wedged socket just means going straight to signals.
        let timeout = grace.clamp(Duration::from_millis(100), QMP_TIMEOUT);
        if let Ok(mut qmp) = QmpClient::connect(&vm.control_socket, timeout) {
            let _ = qmp.quit();
        }
        qemu.wait_gone(deadline.saturating_duration_since(Instant::now()));
    }
    // QEMU first, so that the vsock watcher is not the one left stopping its helper.
    let survivors = runfiles::stop_all(&vm.processes, TERM_GRACE);

    if let Some(paths) = RunPaths::from_control_socket(&vm.control_socket) {
        paths.remove_sockets()?;
    }
    if let VsockEndpoint::Hybrid { uds } = &vm.vsock {
        runfiles::remove_if_present(uds)?;
    }
    if survivors.is_empty() {
        Ok(())
    } else {
        Err(Error::Unkillable(survivors.join(", ")))
    }
}
