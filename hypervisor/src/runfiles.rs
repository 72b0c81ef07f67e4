//! What both backends do with the files and helper processes of a VM's run directory:
//! socket paths that must fit a sockaddr_un, sockets removed when they are left over,
//! helpers waited for until their socket exists, and processes stopped by record.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Error, ProcessRecord, Result};

/// sun_path holds 108 bytes, the last of them NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Fails when `socket`, plus `suffix` bytes a peer appends (hybrid vsock's `_<port>`),
/// would not fit a Unix socket address.
pub fn check_socket_path(dir: &Path, socket: &Path, suffix: usize) -> Result<()> {
    let len = socket.as_os_str().len() + suffix;
    if len > MAX_SOCKET_PATH {
        return Err(Error::Config(format!(
            "the run directory {} is too deep: socket path {} would be {len} bytes, \
             Unix sockets allow {MAX_SOCKET_PATH}",
            dir.display(),
            socket.display(),
        )));
    }
    Ok(())
}

/// Removes a file; one already gone is fine.
pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

/// Ends every process still alive, in order (SIGTERM, SIGKILL after `grace`); returns
/// those that would not die, as "name (pid N)".
pub fn stop_all(processes: &[ProcessRecord], grace: Duration) -> Vec<String> {
    processes
        .iter()
        .filter(|p| p.is_alive() && !p.terminate(grace))
        .map(|p| format!("{} (pid {})", p.name, p.pid))
        .collect()
}

/// A helper that exited during start-up, with the end of its log.
pub fn helper_died(what: &str, status: &str, log: &Path) -> Error {
    Error::HelperDied {
        what: what.into(),
        status: status.into(),
        detail: format!(
            "its log {} ends with:\n{}",
            log.display(),
            crate::console_tail(log, 20)
        ),
    }
}

/// Waits until `helper` has created `socket`; fails if it exits first or `timeout`
/// passes (the helper is left to the caller to stop).
pub fn wait_for_socket(
    what: &str,
    helper: &ProcessRecord,
    socket: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<()> {
    let started = Instant::now();
    while !socket.exists() {
        if !helper.is_alive() {
            return Err(helper_died(what, "exited", log));
        }
        if started.elapsed() > timeout {
            return Err(Error::Timeout {
                what: what.into(),
                secs: timeout.as_secs(),
                detail: format!(
                    "no socket {}; its log {} ends with:\n{}",
                    socket.display(),
                    log.display(),
                    crate::console_tail(log, 20)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
