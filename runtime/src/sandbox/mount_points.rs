//! Mount points made on the host for a rootfs the guest gets read-only.
//!
//! `root.readonly` is enforced on the host (issue 14): the rootfs share is a read-only
//! mount, so a guest talking to the file server directly cannot write it either. But the
//! guest then cannot create the directories and files its mounts go on either, which runc
//! makes before it remounts the root read-only. So ward makes the missing ones here, before
//! sharing. The rootfs is not ward's: a previous (hostile) guest may have left symlinks
//! anywhere in it, so every path is resolved with openat2's RESOLVE_IN_ROOT, as the
//! container would see it, and never leads out of the rootfs.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use oci_spec::runtime::Spec;
use thiserror::Error;

use crate::container::guest_spec::HostBind;

#[derive(Debug, Error)]
pub enum MountPointError {
    #[error("opening the rootfs {path}: {errno}")]
    Rootfs { path: PathBuf, errno: nix::Error },
    #[error("making the mount point {path} in the read-only rootfs {rootfs}: {errno}")]
    Create {
        rootfs: PathBuf,
        path: PathBuf,
        errno: nix::Error,
    },
}

/// A path in the container (absolute) that a mount goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    pub path: PathBuf,
    pub is_dir: bool,
}

/// The mount points of `spec` (the guest's) that lie on the rootfs itself: a destination
/// under another mount's is made by the guest in that mount (/dev/pts in /dev's tmpfs).
/// A bind's mount point is a file when its source is; `binds` name the shared sources,
/// whose guest paths lie under `guest_shared_dir`.
pub fn wanted(spec: &Spec, binds: &[HostBind], guest_shared_dir: &Path) -> Vec<MountPoint> {
    let mounts = spec.mounts().clone().unwrap_or_default();
    let destinations: Vec<PathBuf> = mounts.iter().map(|m| m.destination().clone()).collect();
    mounts
        .iter()
        .filter(|m| {
            let dest = m.destination();
            dest.is_absolute()
                && dest != Path::new("/")
                && !destinations
                    .iter()
                    .any(|other| other != dest && dest.starts_with(other))
        })
        .map(|m| {
            let shared = m
                .source()
                .as_ref()
                .and_then(|s| s.strip_prefix(guest_shared_dir).ok())
                .and_then(|name| binds.iter().find(|b| Path::new(&b.name) == name));
            let is_dir = match (shared, m.source()) {
                (Some(bind), _) => bind.is_dir,
                // A guest-owned bind source (/dev/null): the host's node has the same type.
                (None, Some(source)) if is_bind(m) => std::fs::metadata(source)
                    .map(|meta| meta.is_dir())
                    .unwrap_or(true),
                _ => true,
            };
            MountPoint {
                path: m.destination().clone(),
                is_dir,
            }
        })
        .collect()
}

fn is_bind(mount: &oci_spec::runtime::Mount) -> bool {
    mount.typ().as_deref() == Some("bind")
        || mount
            .options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

/// Makes each missing mount point in `rootfs` (directories 0755 with their missing parents,
/// files empty and 0644) and returns those it made.
pub fn create_missing(
    rootfs: &Path,
    points: &[MountPoint],
) -> Result<Vec<PathBuf>, MountPointError> {
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| MountPointError::Rootfs {
        path: rootfs.to_path_buf(),
        errno,
    })?;
    // SAFETY: `open` returned a new descriptor that nothing else owns.
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    let mut made = Vec::new();
    for point in points {
        let err = |errno| MountPointError::Create {
            rootfs: rootfs.to_path_buf(),
            path: point.path.clone(),
            errno,
        };
        if open_in_root(root.as_raw_fd(), &point.path, OFlag::O_PATH).is_ok() {
            continue;
        }
        let mut parent = PathBuf::from("/");
        let names: Vec<_> = point
            .path
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.to_os_string()),
                _ => None,
            })
            .collect();
        for (i, name) in names.iter().enumerate() {
            let last = i + 1 == names.len();
            let path = parent.join(name);
            let dir = open_in_root(root.as_raw_fd(), &parent, OFlag::O_DIRECTORY).map_err(err)?;
            if open_in_root(root.as_raw_fd(), &path, OFlag::O_PATH).is_err() {
                make(dir.as_raw_fd(), name, point.is_dir || !last).map_err(err)?;
            }
            parent = path;
        }
        made.push(point.path.clone());
    }
    Ok(made)
}

/// Opens `path` in the rootfs `root` as the container would resolve it.
fn open_in_root(root: RawFd, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let relative = if relative.as_os_str().is_empty() {
        Path::new(".")
    } else {
        relative
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(root, relative, how)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes `name` in the directory `dir`: a directory, or an empty file. One that appeared
/// meanwhile is fine; nothing is followed (O_NOFOLLOW, mkdirat never follows).
fn make(dir: RawFd, name: &std::ffi::OsStr, is_dir: bool) -> nix::Result<()> {
    let made = if is_dir {
        nix::sys::stat::mkdirat(Some(dir), name, Mode::from_bits_truncate(0o755))
    } else {
        nix::fcntl::openat(
            Some(dir),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        // SAFETY: openat returned a new descriptor that nothing else owns; it is closed.
        .map(|fd| drop(unsafe { OwnedFd::from_raw_fd(fd) }))
    };
    match made {
        Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, SpecBuilder};

    fn spec(mounts: &[(&str, &str, &str)]) -> Spec {
        let mounts = mounts
            .iter()
            .map(|(dest, typ, source)| {
                let mut m = MountBuilder::default()
                    .destination(dest)
                    .typ(*typ)
                    .source(source);
                if *typ == "bind" {
                    m = m.options(vec!["rbind".to_string()]);
                }
                m.build().unwrap()
            })
            .collect::<Vec<_>>();
        SpecBuilder::default().mounts(mounts).build().unwrap()
    }

    #[test]
    fn wants_the_mount_points_on_the_rootfs_itself() {
        let spec = spec(&[
            ("/proc", "proc", "proc"),
            ("/dev", "tmpfs", "tmpfs"),
            ("/dev/pts", "devpts", "devpts"),
            ("/etc/hosts", "bind", "/run/ward/sandbox/c/mounts/0"),
            ("/data", "bind", "/run/ward/sandbox/c/mounts/1"),
        ]);
        let binds = [
            HostBind {
                source: "/h/hosts".into(),
                name: "0".into(),
                is_dir: false,
                read_only: false,
                recursive: false,
            },
            HostBind {
                source: "/h/data".into(),
                name: "1".into(),
                is_dir: true,
                read_only: false,
                recursive: true,
            },
        ];
        let wanted = wanted(&spec, &binds, Path::new("/run/ward/sandbox/c/mounts"));
        let point = |p: &str, is_dir| MountPoint {
            path: p.into(),
            is_dir,
        };
        assert_eq!(
            wanted,
            [
                point("/proc", true),
                point("/dev", true),
                point("/etc/hosts", false),
                point("/data", true)
            ]
        );
    }

    #[test]
    fn makes_what_is_missing_and_never_leaves_the_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(rootfs.join("proc")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        // Left by a hostile guest: links out of the rootfs, absolute and relative.
        std::os::unix::fs::symlink(&outside, rootfs.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../outside", rootfs.join("rel")).unwrap();
        let point = |p: &str, is_dir| MountPoint {
            path: p.into(),
            is_dir,
        };
        let made = create_missing(
            &rootfs,
            &[
                point("/proc", true),
                point("/new/deep", true),
                point("/etc/hosts", false),
            ],
        )
        .unwrap();
        assert_eq!(made, [PathBuf::from("/new/deep"), "/etc/hosts".into()]);
        assert!(rootfs.join("new/deep").is_dir());
        assert!(rootfs.join("etc/hosts").is_file());
        // A link that leads nowhere inside the rootfs is refused, and nothing is made
        // outside it.
        for link in ["/abs/x", "/rel/y"] {
            let err = create_missing(&rootfs, &[point(link, true)]).unwrap_err();
            assert!(err.to_string().contains(link), "{err}");
        }
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "something was made outside the rootfs"
        );
        // One that leads inside is followed as the container would follow it.
        std::os::unix::fs::symlink("/new", rootfs.join("in")).unwrap();
        create_missing(&rootfs, &[point("/in/z", false)]).unwrap();
        assert!(rootfs.join("new/z").is_file());
    }
}
