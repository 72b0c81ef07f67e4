//! Host paths the guest reaches through one shared directory.
//!
//! A VM's shared directories are fixed when it boots, but a container's bind sources are
//! files and directories anywhere on the host. Each source is bind-mounted under the
//! sandbox's shared directory, which the VM exports as one file system; the guest mounts
//! it once and binds from there. Read-only sources get a read-only host mount, so a guest
//! that talks to the file server directly still cannot write them.
//!
//! A guest is assumed hostile (issue 14), and what it writes through a share lands in host
//! directories. Three measures keep that from becoming a host privilege:
//! - the file servers cannot make device nodes or file capabilities at all (QEMU keeps no
//!   CAP_MKNOD or CAP_SETFCAP, virtiofsd drops them with --modcaps);
//! - every mount here is nosuid and nodev, and read-only ones are read-only all the way
//!   down (mount_setattr with AT_RECURSIVE: a remount would leave submounts writable);
//! - the only host paths through these mounts lie in the sandbox's directory, which only
//!   root may enter, so a setuid file the guest makes here is no one else's to run.
//!   A setuid bit the guest sets on a file it owns cannot be refused without refusing a
//!   package manager's install in the container, so it is made harmless by where the
//!   file can be reached from instead; the bundle's own rootfs path is the engine's, and
//!   the engines keep it under root-only directories as they do for runc, whose
//!   containers can make the same files.
//!
//! Releasing finds the mounts in /proc/self/mountinfo rather than in a record, so it also
//! cleans up after a `ward` that crashed halfway through sharing.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use thiserror::Error;

use crate::container::guest_spec::HostBind;

const MOUNTINFO: &str = "/proc/self/mountinfo";

#[derive(Debug, Error)]
pub enum ShareError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sharing {source_path} with the guest (bind mount on {target}): {errno}")]
    Bind {
        source_path: PathBuf,
        target: PathBuf,
        errno: nix::Error,
    },
    #[error("unmounting {path}: {errno}")]
    Unmount { path: PathBuf, errno: nix::Error },
    #[error("making the share {path} {attributes}: {errno} (mount_setattr needs Linux 5.12)")]
    Attributes {
        path: PathBuf,
        attributes: String,
        errno: nix::Error,
    },
}

/// The attributes every share mount gets.
const SHARE_ATTRIBUTES: u64 = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;

/// Sets mount attributes on the mount at `path` and on every mount below it.
fn set_attributes(path: &Path, attributes: u64) -> Result<(), ShareError> {
    let err = |errno| ShareError::Attributes {
        path: path.to_path_buf(),
        attributes: describe(attributes),
        errno,
    };
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| err(nix::Error::EINVAL))?;
    let attr = libc::mount_attr {
        attr_set: attributes,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a NUL-terminated string and `attr` a mount_attr of the size
    // passed, both alive for the call; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            (libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW) as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(err(nix::Error::last()));
    }
    Ok(())
}

fn describe(attributes: u64) -> String {
    let names = [
        (libc::MOUNT_ATTR_RDONLY, "read-only"),
        (libc::MOUNT_ATTR_NOSUID, "nosuid"),
        (libc::MOUNT_ATTR_NODEV, "nodev"),
    ];
    names
        .iter()
        .filter(|(bit, _)| attributes & bit != 0)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Makes `dir` (which exists) the sandbox's exported directory: a mount point of its own,
/// with shared propagation. A VM shares its directories once, when it boots, but a pod's
/// containers come and go while it runs: each one's rootfs and volumes are bind-mounted
/// below `dir` then. File servers in the host's mount namespace (QEMU's 9p) see such
/// mounts anyway; a file server in a mount namespace of its own (virtiofsd's sandbox)
/// sees them only because they propagate from this shared mount to its slave copy.
pub fn export(dir: &Path) -> Result<(), ShareError> {
    let bind_err = |errno| ShareError::Bind {
        source_path: dir.to_path_buf(),
        target: dir.to_path_buf(),
        errno,
    };
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(bind_err)?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(bind_err)?;
    set_attributes(dir, SHARE_ATTRIBUTES)
}

/// Removes `dir` and what is in it, once nothing is mounted below it any more: a
/// recursive removal through a bind mount would delete the host's files.
pub fn remove_unmounted(dir: &Path) -> Result<(), ShareError> {
    release(dir)?;
    if let Some(path) = mounts_below(dir)?.into_iter().next() {
        return Err(ShareError::Unmount {
            path,
            errno: nix::Error::EBUSY,
        });
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ShareError::Io {
            what: "removing",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Bind-mounts every source under `dir`, which is created if needed.
pub fn share(dir: &Path, binds: &[HostBind]) -> Result<(), ShareError> {
    std::fs::create_dir_all(dir).map_err(|source| ShareError::Io {
        what: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    for bind in binds {
        let target = dir.join(&bind.name);
        let created = if bind.is_dir {
            std::fs::create_dir(&target)
        } else {
            std::fs::File::create(&target).map(drop)
        };
        created.map_err(|source| ShareError::Io {
            what: "creating the mount point",
            path: target.clone(),
            source,
        })?;
        let bind_err = |errno| ShareError::Bind {
            source_path: bind.source.clone(),
            target: target.clone(),
            errno,
        };
        let mut flags = MsFlags::MS_BIND;
        if bind.recursive {
            flags |= MsFlags::MS_REC;
        }
        mount(
            Some(&bind.source),
            &target,
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(bind_err)?;
        let mut attributes = SHARE_ATTRIBUTES;
        if bind.read_only {
            attributes |= libc::MOUNT_ATTR_RDONLY;
        }
        set_attributes(&target, attributes)?;
    }
    Ok(())
}

/// Unmounts everything mounted at or below `dir`, deepest first.
pub fn release(dir: &Path) -> Result<(), ShareError> {
    for path in mounts_below(dir)? {
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(errno) => return Err(ShareError::Unmount { path, errno }),
        }
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Result<Vec<PathBuf>, ShareError> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|source| ShareError::Io {
        what: "reading",
        path: MOUNTINFO.into(),
        source,
    })?;
    Ok(mount_points_below(&text, dir))
}

fn mount_points_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|path| path.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                if let Ok(value) = u8::try_from(value) {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:45 / /run/ward/c1/vm/shared/0 rw shared:1 - ext4 /dev/vda rw
91 22 0:45 / /run/ward/c1/vm/shared/1 ro shared:1 - ext4 /dev/vda rw
92 91 0:46 / /run/ward/c1/vm/shared/1/sub\\040dir rw - tmpfs tmpfs rw
93 22 0:47 / /run/ward/c10/vm/shared/0 rw - ext4 /dev/vda rw
";

    #[test]
    fn finds_the_mounts_below_a_directory_deepest_first() {
        let found = mount_points_below(SAMPLE, Path::new("/run/ward/c1/vm/shared"));
        assert_eq!(
            found,
            vec![
                PathBuf::from("/run/ward/c1/vm/shared/1/sub dir"),
                PathBuf::from("/run/ward/c1/vm/shared/0"),
                PathBuf::from("/run/ward/c1/vm/shared/1"),
            ]
        );
    }

    #[test]
    fn unescapes_octal_sequences() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("plain"), "plain");
    }
}
