//! The serve action: the long-lived shim process. The containerd-shim library's own serve
//! registers the task service under containerd 2's name (`containerd.task.v3.Task`) only,
//! while containerd 1.x calls `containerd.task.v2.Task`; the two carry the same messages,
//! so this serve registers the service under both names. The rest follows the library:
//! subreaper, a reaper for the children the VM's helpers become, the listener handed over
//! from `start`, the exit signal.

use std::collections::HashMap;
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;

use containerd_shim::protos::shim::shim_ttrpc::create_task;
use containerd_shim::protos::ttrpc::{MethodHandler, Server};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Flags, Shim, Task};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGPIPE, SIGTERM};
use thiserror::Error;

use super::WardShim;

/// The task service's name in containerd 2 (what the generated code registers).
const TASK_V3: &str = "/containerd.task.v3.Task/";
/// Its name in containerd 1.x.
const TASK_V2: &str = "/containerd.task.v2.Task/";
/// containerd's environment variable naming its ttrpc socket (for events).
const TTRPC_ADDRESS: &str = "TTRPC_ADDRESS";

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("-namespace and -socket are required to serve")]
    Usage,
    #[error("{TTRPC_ADDRESS} is not set: containerd sets it for its shims")]
    NoTtrpcAddress,
    #[error("becoming the subreaper of the VM's helpers: {0}")]
    Subreaper(#[source] std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("connecting to containerd's events at {address}: {source}")]
    Publisher {
        address: String,
        #[source]
        source: containerd_shim::Error,
    },
    #[error("listening on {path}: {source}")]
    Listen {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ttrpc server: {0}")]
    Server(#[source] containerd_shim::protos::ttrpc::Error),
}

/// The task service's methods under both names.
fn methods(
    task: std::sync::Arc<dyn Task + Send + Sync>,
) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
    let mut all = create_task(task.clone());
    let v2: Vec<_> = create_task(task)
        .into_iter()
        .filter_map(|(path, handler)| {
            path.strip_prefix(TASK_V3)
                .map(|method| (format!("{TASK_V2}{method}"), handler))
        })
        .collect();
    all.extend(v2);
    all
}

/// Collects every exited child: the VM's helpers are double-forked by the library and so
/// re-parented to us, their subreaper.
fn reap_children() {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

fn listen(path: &str) -> std::io::Result<UnixListener> {
    if let Some(parent) = Path::new(path).parent() {
        std::fs::create_dir_all(parent)?;
    }
    UnixListener::bind(path)
}

/// Tells the `start` action that launched us that the socket is up: it reads our stdout
/// until end of file.
fn signal_started() {
    // SAFETY: dup2 on the process's own standard descriptors; stdout is replaced by a
    // copy of stderr, which closes the pipe `start` reads.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
}

pub fn serve(flags: &Flags) -> Result<(), ServeError> {
    if flags.namespace.is_empty() || flags.socket.is_empty() {
        return Err(ServeError::Usage);
    }
    // Before any thread: a SIGPIPE from a FIFO whose reader left must not kill us.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGPIPE, SIGCHLD])
        .map_err(ServeError::Signals)?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(ServeError::Subreaper(std::io::Error::last_os_error()));
    }
    let path = flags
        .socket
        .strip_prefix("unix://")
        .unwrap_or(&flags.socket)
        .to_string();
    let listener = match listen(&path) {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            // Another shim of the group serves there already: confirm, and leave.
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                let _ = containerd_shim::util::write_address(&flags.socket);
                signal_started();
                return Ok(());
            }
            let _ = std::fs::remove_file(&path);
            listen(&path).map_err(|source| ServeError::Listen {
                path: path.clone(),
                source,
            })?
        }
        Err(source) => {
            return Err(ServeError::Listen {
                path: path.clone(),
                source,
            })
        }
    };
    let ttrpc_address = std::env::var(TTRPC_ADDRESS).map_err(|_| ServeError::NoTtrpcAddress)?;
    let publisher =
        RemotePublisher::new(&ttrpc_address).map_err(|source| ServeError::Publisher {
            address: ttrpc_address.clone(),
            source,
        })?;
    let mut config = super::library_config();
    let mut shim = WardShim::new(super::RUNTIME_ID, flags, &mut config);
    let service = shim.create_task_service(publisher);
    let task: std::sync::Arc<dyn Task + Send + Sync> = std::sync::Arc::new(service);
    let mut server = Server::new()
        .add_listener(listener.into_raw_fd())
        .map_err(ServeError::Server)?
        .register_service(methods(task));
    server.start().map_err(ServeError::Server)?;
    signal_started();

    std::thread::spawn(move || {
        for signal in signals.forever() {
            // SIGTERM and SIGINT are not how containerd stops a shim (it calls
            // Shutdown), and a shim that dies with live VMs would orphan them.
            if signal == SIGCHLD {
                reap_children();
            }
        }
    });
    shim.wait();
    server.shutdown();
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Task for Nothing {}

    #[test]
    fn the_task_service_answers_to_both_names() {
        let all = methods(std::sync::Arc::new(Nothing));
        for name in ["Create", "Start", "Wait", "Delete", "Shutdown"] {
            assert!(all.contains_key(&format!("{TASK_V3}{name}")), "{name}");
            assert!(all.contains_key(&format!("{TASK_V2}{name}")), "{name}");
        }
    }
}
