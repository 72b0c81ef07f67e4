//! `linux.namespaces[].path` checked on the host, before anything is started.
//!
//! The runtime spec says a runtime MUST fail when a path is not a namespace of the entry's
//! type; runc fails when its setns() with the entry's type is refused. ward does not join
//! host namespaces (the container gets fresh ones in the guest), so without this check a
//! wrong path would pass silently where runc refuses it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use thiserror::Error;

/// statfs f_type of nsfs, the file system of /proc/PID/ns/* and their bind mounts.
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// `_IO(0xb7, 0x3)`: which CLONE_NEW* type an nsfs file is (linux/nsfs.h).
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

#[derive(Debug, Error)]
pub enum NamespacePathError {
    #[error("{kind} namespace path {path:?} is not an absolute path")]
    Relative { kind: String, path: PathBuf },
    #[error("{kind} namespace path {path:?}: {source}")]
    Open {
        kind: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{kind} namespace path {path:?} is not a namespace")]
    NotNamespace { kind: String, path: PathBuf },
    #[error("{kind} namespace path {path:?} is a namespace of type {actual}, not {kind}")]
    WrongType {
        kind: String,
        path: PathBuf,
        actual: String,
    },
}

/// The name runc uses for a namespace type in its messages.
fn kind_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}

fn clone_flag(typ: LinuxNamespaceType) -> libc::c_int {
    match typ {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        // Not in every libc release; linux/sched.h.
        LinuxNamespaceType::Time => 0x80,
    }
}

fn kind_of_flag(flag: libc::c_int) -> String {
    [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::User,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Time,
    ]
    .into_iter()
    .find(|t| clone_flag(*t) == flag)
    .map(|t| kind_name(t).to_string())
    .unwrap_or_else(|| format!("unknown (type {flag:#x})"))
}

/// Every entry with a path names a namespace of its own type.
pub fn check(namespaces: &[LinuxNamespace]) -> Result<(), NamespacePathError> {
    for ns in namespaces {
        if let Some(path) = ns.path() {
            check_one(ns.typ(), path)?;
        }
    }
    Ok(())
}

fn check_one(typ: LinuxNamespaceType, path: &Path) -> Result<(), NamespacePathError> {
    let kind = kind_name(typ).to_string();
    if !path.is_absolute() {
        return Err(NamespacePathError::Relative {
            kind,
            path: path.into(),
        });
    }
    // O_NONBLOCK: a FIFO planted at the path must not hang the check.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| NamespacePathError::Open {
            kind: kind.clone(),
            path: path.into(),
            source,
        })?;
    let not_namespace = || NamespacePathError::NotNamespace {
        kind: kind.clone(),
        path: path.into(),
    };
    let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| NamespacePathError::Open {
        kind: kind.clone(),
        path: path.into(),
        source: e.into(),
    })?;
    if fs.filesystem_type().0 as i64 != NSFS_MAGIC {
        return Err(not_namespace());
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and reads nothing from our memory; the fd
    // stays open for the duration of the call.
    let actual = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if actual < 0 {
        return Err(NamespacePathError::Open {
            kind,
            path: path.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    if actual != clone_flag(typ) {
        return Err(NamespacePathError::WrongType {
            actual: kind_of_flag(actual),
            kind,
            path: path.into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(typ: &str, path: &str) -> LinuxNamespace {
        serde_json::from_value(serde_json::json!({"type": typ, "path": path})).unwrap()
    }

    #[test]
    fn a_namespace_of_the_entrys_type_passes() {
        let namespaces = [
            entry("network", "/proc/self/ns/net"),
            entry("ipc", "/proc/self/ns/ipc"),
            entry("mount", "/proc/self/ns/mnt"),
            entry("uts", "/proc/self/ns/uts"),
            serde_json::from_value(serde_json::json!({"type": "pid"})).unwrap(),
        ];
        check(&namespaces).unwrap();
    }

    #[test]
    fn a_namespace_of_another_type_is_refused() {
        let err = check(&[entry("network", "/proc/self/ns/ipc")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "network namespace path \"/proc/self/ns/ipc\" is a namespace of type ipc, not network"
        );
    }

    #[test]
    fn files_that_are_no_namespace_are_refused() {
        let err = check(&[entry("network", "/proc/self/status")]).unwrap_err();
        assert!(
            matches!(err, NamespacePathError::NotNamespace { .. }),
            "{err}"
        );
        let err = check(&[entry("network", "/nonexistent/netns")]).unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
        let err = check(&[entry("ipc", "proc/self/ns/ipc")]).unwrap_err();
        assert!(matches!(err, NamespacePathError::Relative { .. }), "{err}");
    }
}
