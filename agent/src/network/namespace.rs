//! Network namespaces the agent makes for single containers: a pod member that brought
//! interfaces of its own gets them in a namespace apart from the pod's (the guest's own),
//! kept alive by a bind mount at /run/ward/netns/<name> that its spec names.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use super::NetworkError;

#[cfg(not(test))]
pub const NETNS_DIR: &str = ward_agent_protocol::GUEST_NETNS_DIR;
/// Unit tests run on the host: their namespaces stay apart from anything of ward's.
#[cfg(test)]
pub const NETNS_DIR: &str = "/run/ward-agent-tests/netns";

fn failed(what: String) -> impl FnOnce(std::io::Error) -> NetworkError {
    move |e| NetworkError::Namespace(format!("{what}: {e}"))
}

pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether `path` is a namespace file already (a bind mount of an nsfs inode).
fn is_namespace(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// Makes the namespace `name` unless it exists, and returns its path.
pub fn create(name: &str) -> Result<PathBuf, NetworkError> {
    let path = path_of(name);
    if is_namespace(&path) {
        return Ok(path);
    }
    fs::create_dir_all(NETNS_DIR).map_err(failed(format!("making {NETNS_DIR}")))?;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(failed(format!("making {}", path.display())))?;
    // unshare changes only the calling thread's namespace: a thread of its own makes it
    // and pins it with the bind mount before it ends.
    let target = path.clone();
    std::thread::spawn(move || -> Result<(), NetworkError> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| failed("unshare(CLONE_NEWNET)".into())(e.into()))?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(
            Some(own.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| failed(format!("binding {own} to {}", target.display()))(e.into()))
    })
    .join()
    .map_err(|_| NetworkError::Namespace("the thread making the namespace panicked".into()))??;
    Ok(path)
}

/// Runs `work` on a thread that has entered namespace `path` (setns changes only the
/// calling thread, so the agent's other threads stay where they are).
pub fn within<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    let file = fs::File::open(path).map_err(failed(format!("opening {}", path.display())))?;
    let fd = OwnedFd::from(file);
    let shown = path.display().to_string();
    std::thread::spawn(move || {
        setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| failed(format!("entering {shown}"))(e.into()))?;
        work()
    })
    .join()
    .map_err(|_| NetworkError::Namespace("the thread in the namespace panicked".into()))?
}

/// Deletes namespace `name`: its NICs go back to the guest's own namespace once nothing
/// holds it (its container's processes are gone). A name never made is fine.
pub fn remove(name: &str) -> Result<(), NetworkError> {
    let path = path_of(name);
    if is_namespace(&path) {
        umount2(&path, MntFlags::MNT_DETACH)
            .map_err(|e| failed(format!("unmounting {}", path.display()))(e.into()))?;
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed(format!("removing {}", path.display()))(e)),
    }
}
