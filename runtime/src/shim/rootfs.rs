//! The container's root filesystem as containerd's snapshotter describes it (the `rootfs`
//! mounts of Create), mounted at `<bundle>/rootfs` before the library shares that
//! directory with the VM, and unmounted when the container is deleted.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RootfsError {
    #[error("container \"{id}\": creating {path}: {source}")]
    Dir {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container \"{id}\": mounting {fstype} {source_path} at {target}: {errno}")]
    Mount {
        id: String,
        fstype: String,
        source_path: String,
        target: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("container \"{id}\": unmounting {target}: {errno}")]
    Unmount {
        id: String,
        target: PathBuf,
        errno: nix::errno::Errno,
    },
}

/// One mount as containerd sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub fstype: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Mount options that are flags; the rest go to the file system as its data string.
fn flag(option: &str) -> Option<(bool, MsFlags)> {
    let set = |f| Some((true, f));
    let clear = |f| Some((false, f));
    match option {
        "ro" => set(MsFlags::MS_RDONLY),
        "rw" => clear(MsFlags::MS_RDONLY),
        "bind" => set(MsFlags::MS_BIND),
        "rbind" => set(MsFlags::MS_BIND | MsFlags::MS_REC),
        "nosuid" => set(MsFlags::MS_NOSUID),
        "suid" => clear(MsFlags::MS_NOSUID),
        "nodev" => set(MsFlags::MS_NODEV),
        "dev" => clear(MsFlags::MS_NODEV),
        "noexec" => set(MsFlags::MS_NOEXEC),
        "exec" => clear(MsFlags::MS_NOEXEC),
        "noatime" => set(MsFlags::MS_NOATIME),
        "relatime" => set(MsFlags::MS_RELATIME),
        "strictatime" => set(MsFlags::MS_STRICTATIME),
        "nodiratime" => set(MsFlags::MS_NODIRATIME),
        "sync" => set(MsFlags::MS_SYNCHRONOUS),
        "async" => clear(MsFlags::MS_SYNCHRONOUS),
        "remount" => set(MsFlags::MS_REMOUNT),
        _ => None,
    }
}

/// Splits options into mount flags and the data string.
pub fn parse_options(options: &[String]) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        match flag(option) {
            Some((true, f)) => flags.insert(f),
            Some((false, f)) => flags.remove(f),
            None => data.push(option.as_str()),
        }
    }
    (flags, data.join(","))
}

/// Mounts `mounts` in order at `target` (created if needed).
pub fn mount_all(id: &str, mounts: &[Mount], target: &Path) -> Result<(), RootfsError> {
    if mounts.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(|source| RootfsError::Dir {
        id: id.to_string(),
        path: target.to_path_buf(),
        source,
    })?;
    for m in mounts {
        let (flags, data) = parse_options(&m.options);
        let fail = |errno| RootfsError::Mount {
            id: id.to_string(),
            fstype: m.fstype.clone(),
            source_path: m.source.clone(),
            target: target.to_path_buf(),
            errno,
        };
        let data = (!data.is_empty()).then_some(data.as_str());
        let bind = flags.contains(MsFlags::MS_BIND);
        // A bind mount ignores MS_RDONLY until it is remounted.
        let first = if bind {
            flags - MsFlags::MS_RDONLY
        } else {
            flags
        };
        nix::mount::mount(
            Some(m.source.as_str()),
            target,
            Some(m.fstype.as_str()),
            first,
            data,
        )
        .map_err(fail)?;
        if bind && flags.contains(MsFlags::MS_RDONLY) {
            let remount = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
            nix::mount::mount(None::<&str>, target, None::<&str>, remount, None::<&str>)
                .map_err(fail)?;
        }
    }
    Ok(())
}

/// Unmounts what `mount_all` stacked at `target`; a target with nothing mounted is fine.
pub fn unmount_all(id: &str, target: &Path, layers: usize) -> Result<(), RootfsError> {
    for _ in 0..layers {
        match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(errno) => {
                return Err(RootfsError::Unmount {
                    id: id.to_string(),
                    target: target.to_path_buf(),
                    errno,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overlay_options_are_data_and_flags_are_flags() {
        let (flags, data) = parse_options(&strings(&[
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/l1:/l2",
            "nodev",
        ]));
        assert_eq!(flags, MsFlags::MS_NODEV);
        assert_eq!(data, "index=off,workdir=/w,upperdir=/u,lowerdir=/l1:/l2");
        let (flags, data) = parse_options(&strings(&["rbind", "ro", "rw"]));
        assert_eq!(flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert!(data.is_empty());
    }
}
