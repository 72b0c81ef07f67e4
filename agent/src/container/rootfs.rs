//! Building a container's root filesystem, run by the container's init process in its new
//! mount namespace (after fork: no logging, errors are returned as text for the report
//! pipe). The plan itself is made by the agent (`plan.rs`, `mounts.rs`).
//!
//! Order: make every mount private (nothing leaks back to the agent), bind the rootfs onto
//! itself (pivot_root needs a mount point), the spec's mounts in order, the default /dev
//! entries when the spec gives /dev its own tmpfs, the spec's devices, pivot_root; then, inside the new root,
//! sysctls, masked paths, read-only paths, the read-only root and the rootfs propagation.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::statvfs::FsFlags;

use super::devices::{self, DevicePlan};
use super::mounts::{
    resolve_in_root, MountPlan, MountSource, RealFs, DEFAULT_DEVICES, DEFAULT_DEV_LINKS,
};

/// What the init process does to its mount namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootfsPlan {
    /// The rootfs as the agent sees it.
    pub root: PathBuf,
    pub readonly: bool,
    pub propagation: Option<MsFlags>,
    pub mounts: Vec<MountPlan>,
    /// Populate /dev (the spec mounts a tmpfs there).
    pub default_devices: bool,
    pub masked: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    /// (path under /proc/sys, value).
    pub sysctls: Vec<(PathBuf, String)>,
    /// `linux.devices`, made after the mounts (a /dev tmpfs among them).
    pub devices: Vec<DevicePlan>,
    /// The init is in a new user namespace, where mknod of a device is refused.
    pub in_user_ns: bool,
    /// The container's cgroup directory, bound where a cgroup2 mount is refused.
    pub cgroup_dir: PathBuf,
}

/// mount(2) with plain Rust types.
fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    nix::mount::mount(source, target, fstype, flags, data)
}

fn fail(what: String, err: nix::Error) -> String {
    format!("{what}: {}", err.desc())
}

fn fail_io(what: String, err: io::Error) -> String {
    format!("{what}: {err}")
}

/// Everything before pivot_root, then pivot_root.
pub fn prepare(plan: &RootfsPlan) -> Result<(), String> {
    let root = &plan.root;
    mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(|e| fail("making the mounts private".into(), e))?;
    mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| fail(format!("bind-mounting the rootfs {}", root.display()), e))?;
    for m in &plan.mounts {
        mount_one(root, m, &plan.cgroup_dir)?;
    }
    if plan.default_devices {
        populate_dev(root)?;
    }
    devices::create(root, &plan.devices, plan.in_user_ns)?;
    pivot(root)
}

fn mount_one(root: &Path, m: &MountPlan, cgroup_dir: &Path) -> Result<(), String> {
    let dest = resolve_in_root(root, &m.destination, &RealFs).map_err(|e| e.to_string())?;
    let shown = m.destination.display().to_string();
    let opts = &m.options;
    match &m.source {
        MountSource::Bind(source) => {
            let meta = fs::metadata(source)
                .map_err(|e| fail_io(format!("bind mount source {}", source.display()), e))?;
            create_mount_point(&dest, meta.is_dir())
                .map_err(|e| fail_io(format!("creating the mount point {shown}"), e))?;
            let mut flags = MsFlags::MS_BIND;
            if opts.recursive {
                flags |= MsFlags::MS_REC;
            }
            mount(Some(source), &dest, None, flags, None)
                .map_err(|e| fail(format!("bind-mounting {} on {shown}", source.display()), e))?;
            // A bind mount ignores every other flag: they take a remount.
            let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
            if !extra.is_empty() {
                remount(&dest, extra, opts.cleared)
                    .map_err(|e| fail(format!("remounting {shown}"), e))?;
            }
        }
        MountSource::Fs { fstype, source } => {
            create_mount_point(&dest, true)
                .map_err(|e| fail_io(format!("creating the mount point {shown}"), e))?;
            let data = opts.data_string();
            let data = (!data.is_empty()).then_some(data.as_str());
            match mount(
                Some(Path::new(source)),
                &dest,
                Some(fstype),
                opts.flags,
                data,
            ) {
                Ok(()) => {}
                // A user namespace without a cgroup namespace of its own may not mount
                // cgroup2 (runc's rootless template is one): the container's own cgroup
                // directory is bound there instead, as runc does.
                Err(nix::Error::EPERM | nix::Error::EBUSY) if fstype == "cgroup2" => {
                    mount(
                        Some(cgroup_dir),
                        &dest,
                        None,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None,
                    )
                    .map_err(|e| fail(format!("binding the container's cgroup on {shown}"), e))?;
                    let extra = opts.flags & !MsFlags::MS_REMOUNT;
                    if !extra.is_empty() {
                        remount(&dest, extra, opts.cleared)
                            .map_err(|e| fail(format!("remounting {shown}"), e))?;
                    }
                }
                Err(e) => return Err(fail(format!("mounting {fstype} on {shown}"), e)),
            }
        }
    }
    for propagation in &opts.propagation {
        mount(None, &dest, None, *propagation, None)
            .map_err(|e| fail(format!("changing the propagation of {shown}"), e))?;
    }
    Ok(())
}

/// Creates a directory, or an empty file for a file bind mount, with missing parents.
fn create_mount_point(path: &Path, dir: bool) -> io::Result<()> {
    if dir {
        return fs::create_dir_all(path);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(drop),
        Err(e) => Err(e),
    }
}

/// The flags a mount already has that a remount must keep (in a user namespace the kernel
/// refuses to drop them), minus those the options clear.
fn locked_flags(path: &Path, cleared: MsFlags) -> MsFlags {
    let Ok(stat) = nix::sys::statvfs::statvfs(path) else {
        return MsFlags::empty();
    };
    let have = stat.flags();
    let mut flags = MsFlags::empty();
    for (st, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(st) {
            flags |= ms;
        }
    }
    flags & !cleared
}

fn remount(path: &Path, flags: MsFlags, cleared: MsFlags) -> nix::Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked_flags(path, cleared);
    mount(None, path, None, flags, None)
}

/// The standard device nodes (bind-mounted from the guest's devtmpfs: no mknod, which a
/// user namespace would refuse) and the /dev symlinks.
fn populate_dev(root: &Path) -> Result<(), String> {
    let dev = resolve_in_root(root, Path::new("/dev"), &RealFs).map_err(|e| e.to_string())?;
    for name in DEFAULT_DEVICES {
        let host = Path::new("/dev").join(name);
        let dest = dev.join(name);
        create_mount_point(&dest, false)
            .map_err(|e| fail_io(format!("creating /dev/{name}"), e))?;
        mount(Some(&host), &dest, None, MsFlags::MS_BIND, None).map_err(|e| {
            fail(
                format!("bind-mounting {} on /dev/{name}", host.display()),
                e,
            )
        })?;
    }
    for (name, target) in DEFAULT_DEV_LINKS {
        match symlink(target, dev.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(fail_io(format!("creating the symlink /dev/{name}"), e)),
        }
    }
    Ok(())
}

/// pivot_root(".", ".") then detaching the old root: no directory for the old root is
/// needed in the image.
fn pivot(root: &Path) -> Result<(), String> {
    // The old root is reached through a descriptor: after pivot_root it is stacked over
    // the new root at "/", and a path lookup of "." from the new root's directory would
    // name the new root, whose mounts (and their propagation) must not change.
    let old_root = fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open("/")
        .map_err(|e| fail_io("opening the old root".into(), e))?;
    nix::unistd::chdir(root).map_err(|e| fail(format!("chdir to {}", root.display()), e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| fail("pivot_root".into(), e))?;
    nix::unistd::fchdir(old_root.as_raw_fd())
        .map_err(|e| fail("entering the old root".into(), e))?;
    // Unmounting the old root must not propagate anywhere: a slave first, then detached.
    mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )
    .map_err(|e| fail("making the old root a slave".into(), e))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| fail("detaching the old root".into(), e))?;
    nix::unistd::chdir("/").map_err(|e| fail("chdir to the new root".into(), e))
}

/// Everything after pivot_root: paths are now the container's own.
pub fn finish(plan: &RootfsPlan) -> Result<(), String> {
    for (path, value) in &plan.sysctls {
        let full = Path::new("/proc/sys").join(path);
        fs::write(&full, value)
            .map_err(|e| fail_io(format!("setting sysctl {}", full.display()), e))?;
    }
    for path in &plan.masked {
        mask(path)?;
    }
    for path in &plan.readonly_paths {
        make_readonly(path)?;
    }
    if plan.readonly {
        remount(Path::new("/"), MsFlags::MS_RDONLY, MsFlags::empty())
            .map_err(|e| fail("making the root read-only".into(), e))?;
    }
    if let Some(propagation) = plan.propagation {
        mount(None, Path::new("/"), None, propagation, None)
            .map_err(|e| fail("setting the rootfs propagation".into(), e))?;
    }
    Ok(())
}

/// Hides a path: /dev/null over a file, an empty read-only tmpfs over a directory.
fn mask(path: &Path) -> Result<(), String> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail_io(format!("masking {}", path.display()), e)),
    };
    let result = if meta.is_dir() {
        mount(
            Some(Path::new("tmpfs")),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None,
        )
    } else {
        mount(
            Some(Path::new("/dev/null")),
            path,
            None,
            MsFlags::MS_BIND,
            None,
        )
    };
    result.map_err(|e| fail(format!("masking {}", path.display()), e))
}

fn make_readonly(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail_io(format!("making {} read-only", path.display()), e)),
    }
    mount(
        Some(path),
        path,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .and_then(|()| remount(path, MsFlags::MS_RDONLY, MsFlags::empty()))
    .map_err(|e| fail(format!("making {} read-only", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_files_or_directories() {
        let dir = std::env::temp_dir().join(format!("ward-agent-mp-{}", std::process::id()));
        let file = dir.join("a/b/file");
        create_mount_point(&file, false).unwrap();
        assert!(file.is_file());
        create_mount_point(&file, false).unwrap(); // exists: fine
        create_mount_point(&dir.join("c/d"), true).unwrap();
        assert!(dir.join("c/d").is_dir());
        fs::remove_dir_all(&dir).unwrap();
    }
}
