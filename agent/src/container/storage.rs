//! The host's storages (a 9p share of the bundle's rootfs, ...): checked, mounted before
//! the container is built, unmounted when it is removed.
//!
//! Every guest path the host names — storage mount points and the rootfs — must lie under
//! [`GUEST_BASE`]: the agent creates directories there, so the host can never make it
//! create or mount over anything the guest itself relies on (/proc, /dev, /sbin...).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MntFlags;
use thiserror::Error;
use ward_agent_protocol::agent::Storage;

use super::mounts::{check_path, parse_options, MountError, MountOptions};

/// Root of every guest path the host may name.
pub const GUEST_BASE: &str = "/run/ward";
/// Most storages one container may have.
pub const MAX_STORAGES: usize = 16;

const FSTYPES: [&str; 5] = ["9p", "virtiofs", "tmpfs", "ext4", "xfs"];

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("{0} storages, at most {MAX_STORAGES} are accepted")]
    TooMany(usize),
    #[error("storage type {0:?} is not supported (9p, virtiofs, tmpfs, ext4, xfs)")]
    Fstype(String),
    #[error("storage source {0:?} is not a valid {1}")]
    Source(String, &'static str),
    #[error("storage {0}: bind mounts are not storages")]
    Bind(String),
    #[error("{what} {path:?} is not under {GUEST_BASE}")]
    Outside { what: &'static str, path: String },
    #[error(transparent)]
    Path(#[from] MountError),
    #[error("mounting {fstype} {source_name} on {mount_point}: {error}")]
    Mount {
        fstype: String,
        source_name: String,
        mount_point: String,
        error: nix::Error,
    },
    #[error("creating the mount point {path}: {error}")]
    MountPoint { path: String, error: io::Error },
    #[error("unmounting {path}: {error}")]
    Unmount { path: String, error: nix::Error },
    #[error("sandbox storage {mount_point} is already mounted from another source")]
    Conflict { mount_point: String },
}

/// A checked storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePlan {
    pub source: String,
    pub fstype: String,
    pub options: MountOptions,
    pub mount_point: PathBuf,
}

/// Checks a guest path the host names: absolute, no `..`, strictly under [`GUEST_BASE`].
pub fn check_guest_path(what: &'static str, path: &str) -> Result<PathBuf, StorageError> {
    let path = PathBuf::from(path);
    check_path(what, &path)?;
    if !path.starts_with(GUEST_BASE) || path == Path::new(GUEST_BASE) {
        return Err(StorageError::Outside {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(path)
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 255
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub fn plan(storages: &[Storage]) -> Result<Vec<StoragePlan>, StorageError> {
    if storages.len() > MAX_STORAGES {
        return Err(StorageError::TooMany(storages.len()));
    }
    storages.iter().map(plan_one).collect()
}

fn plan_one(storage: &Storage) -> Result<StoragePlan, StorageError> {
    let fstype = storage.fstype.as_str();
    if !FSTYPES.contains(&fstype) {
        return Err(StorageError::Fstype(fstype.chars().take(32).collect()));
    }
    let source = storage.source.clone();
    match fstype {
        "9p" | "virtiofs" => {
            if !valid_tag(&source) {
                return Err(StorageError::Source(source, "mount tag"));
            }
        }
        "tmpfs" => {}
        _ => {
            let path = Path::new(&source);
            if check_path("storage source", path).is_err() || !path.starts_with("/dev") {
                return Err(StorageError::Source(source, "device path under /dev"));
            }
        }
    }
    let mut options = parse_options(&storage.options)?;
    if options.bind {
        return Err(StorageError::Bind(source));
    }
    if fstype == "9p" {
        // What a 9p share over virtio needs; the host may override either.
        let has = |data: &[String], key: &str| data.iter().any(|o| o.starts_with(key));
        if !has(&options.data, "trans=") {
            options.data.push("trans=virtio".into());
        }
        if !has(&options.data, "version=") {
            options.data.push("version=9p2000.L".into());
        }
    }
    let mount_point = check_guest_path("storage mount point", &storage.mount_point)?;
    Ok(StoragePlan {
        source,
        fstype: fstype.to_string(),
        options,
        mount_point,
    })
}

/// Whether two claimed guest paths collide (equal, or one inside the other).
pub fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Creates the mount point and mounts the storage.
pub fn mount(plan: &StoragePlan) -> Result<(), StorageError> {
    fs::create_dir_all(&plan.mount_point).map_err(|error| StorageError::MountPoint {
        path: plan.mount_point.display().to_string(),
        error,
    })?;
    let data = plan.options.data_string();
    nix::mount::mount(
        Some(plan.source.as_str()),
        &plan.mount_point,
        Some(plan.fstype.as_str()),
        plan.options.flags,
        (!data.is_empty()).then_some(data.as_str()),
    )
    .map_err(|error| StorageError::Mount {
        fstype: plan.fstype.clone(),
        source_name: plan.source.clone(),
        mount_point: plan.mount_point.display().to_string(),
        error,
    })
}

/// Detaches the storage and removes its (now empty) mount point and the parents the agent
/// made for it, up to [`GUEST_BASE`]. Never removes anything but empty directories.
pub fn unmount(mount_point: &Path) -> Result<(), StorageError> {
    match nix::mount::umount2(mount_point, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(error) => {
            return Err(StorageError::Unmount {
                path: mount_point.display().to_string(),
                error,
            })
        }
    }
    remove_empty_dirs(mount_point);
    Ok(())
}

/// rmdir `path` and its parents while they are empty and under [`GUEST_BASE`].
pub fn remove_empty_dirs(path: &Path) {
    let base = Path::new(GUEST_BASE);
    let mut dir = Some(path);
    while let Some(d) = dir {
        if d == base || !d.starts_with(base) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(source: &str, fstype: &str, options: &[&str], mount_point: &str) -> Storage {
        let mut s = Storage::new();
        s.source = source.into();
        s.fstype = fstype.into();
        s.options = options.iter().map(|o| o.to_string()).collect();
        s.mount_point = mount_point.into();
        s
    }

    #[test]
    fn the_runtimes_9p_storage_plans() {
        let plans = plan(&[storage(
            "rootfs0",
            "9p",
            &["trans=virtio", "version=9p2000.L", "msize=262144"],
            "/run/ward/containers/c1/rootfs",
        )])
        .unwrap();
        assert_eq!(
            plans[0].options.data_string(),
            "trans=virtio,version=9p2000.L,msize=262144"
        );
        assert_eq!(
            plans[0].mount_point,
            PathBuf::from("/run/ward/containers/c1/rootfs")
        );
        // Defaults are added when the host leaves them out.
        let plans = plan(&[storage("t", "9p", &["ro"], "/run/ward/x")]).unwrap();
        assert_eq!(
            plans[0].options.data_string(),
            "trans=virtio,version=9p2000.L"
        );
        assert_eq!(plans[0].options.flags, nix::mount::MsFlags::MS_RDONLY);
    }

    #[test]
    fn storages_are_confined() {
        let bad = [
            storage("t", "9p", &[], "/etc"),
            storage("t", "9p", &[], "/run/ward"),
            storage("t", "9p", &[], "/run/ward/../../etc"),
            storage("t", "9p", &[], "run/ward/x"),
            storage("t", "nfs", &[], "/run/ward/x"),
            storage("a b", "9p", &[], "/run/ward/x"),
            storage("/etc/shadow", "ext4", &[], "/run/ward/x"),
            storage("/dev/../etc/x", "ext4", &[], "/run/ward/x"),
            storage("t", "9p", &["bind"], "/run/ward/x"),
            storage("t", "9p", &["trans=virtio,cache=loose"], "/run/ward/x"),
        ];
        for s in bad {
            assert!(plan(std::slice::from_ref(&s)).is_err(), "{s:?}");
        }
        let many = vec![storage("t", "tmpfs", &[], "/run/ward/x"); MAX_STORAGES + 1];
        assert!(matches!(plan(&many), Err(StorageError::TooMany(_))));
        assert!(plan(&[storage("/dev/vdb", "ext4", &[], "/run/ward/x")]).is_ok());
    }

    #[test]
    fn claimed_paths_collide_by_prefix() {
        assert!(overlaps(
            Path::new("/run/ward/a"),
            Path::new("/run/ward/a/b")
        ));
        assert!(overlaps(
            Path::new("/run/ward/a/b"),
            Path::new("/run/ward/a")
        ));
        assert!(!overlaps(
            Path::new("/run/ward/a"),
            Path::new("/run/ward/ab")
        ));
    }
}
