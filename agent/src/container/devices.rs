//! `linux.devices`: device nodes made in the container's /dev.
//!
//! The plan is pure (checked before anything is forked); `create` runs in the container's
//! init before pivot_root, so it returns errors as text for the report pipe.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use thiserror::Error;

use super::mounts::{check_path, resolve_in_root, MountError, RealFs};

/// Most device nodes a spec may list.
const MAX_DEVICES: usize = 256;
/// The permissions of a node whose entry gives none (runtime-spec's example, runc's
/// default).
const DEFAULT_MODE: u32 = 0o666;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("linux.devices has {0} entries, at most {MAX_DEVICES} are accepted")]
    TooMany(usize),
    #[error(transparent)]
    Path(#[from] MountError),
    #[error("linux.devices: {path:?} has type \"a\", which only a cgroup rule may have")]
    AllType { path: String },
    #[error("linux.devices: {path:?} has an invalid major:minor {major}:{minor}")]
    Number {
        path: String,
        major: i64,
        minor: i64,
    },
    #[error("linux.devices: {path:?} has file mode {mode:#o}, more than permission bits")]
    Mode { path: String, mode: u32 },
}

/// One node to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePlan {
    /// Absolute, inside the container.
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

pub fn plan(devices: &[LinuxDevice]) -> Result<Vec<DevicePlan>, DeviceError> {
    if devices.len() > MAX_DEVICES {
        return Err(DeviceError::TooMany(devices.len()));
    }
    devices.iter().map(plan_one).collect()
}

fn plan_one(device: &LinuxDevice) -> Result<DevicePlan, DeviceError> {
    let path = device.path().clone();
    check_path("linux.devices path", &path)?;
    let shown = path.display().to_string();
    let kind = match device.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => return Err(DeviceError::AllType { path: shown }),
    };
    let (major, minor) = (device.major(), device.minor());
    // makedev packs a 12-bit major and a 20-bit minor as the kernel's dev_t does.
    let (Ok(major_u), Ok(minor_u)) = (u64::try_from(major), u64::try_from(minor)) else {
        return Err(DeviceError::Number {
            path: shown,
            major,
            minor,
        });
    };
    if major_u >= 1 << 12 || minor_u >= 1 << 20 {
        return Err(DeviceError::Number {
            path: shown,
            major,
            minor,
        });
    }
    let mode = device.file_mode().unwrap_or(DEFAULT_MODE);
    if mode & !0o7777 != 0 {
        return Err(DeviceError::Mode { path: shown, mode });
    }
    Ok(DevicePlan {
        path,
        kind,
        major: major_u,
        minor: minor_u,
        mode,
        uid: device.uid().unwrap_or(0),
        gid: device.gid().unwrap_or(0),
    })
}

/// Makes every node under `root`. In a new user namespace the kernel refuses mknod of a
/// device, so the guest's node of the same path is bound there instead (as runc does with
/// the host's).
pub fn create(root: &Path, devices: &[DevicePlan], in_user_ns: bool) -> Result<(), String> {
    for device in devices {
        let dest = resolve_in_root(root, &device.path, &RealFs).map_err(|e| e.to_string())?;
        let shown = device.path.display();
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating the directory of device {shown}: {e}"))?;
        }
        if in_user_ns && device.kind != SFlag::S_IFIFO {
            bind_guest_node(&dest, device)?;
            continue;
        }
        let dev = nix::sys::stat::makedev(device.major, device.minor);
        match nix::sys::stat::mknod(&dest, device.kind, Mode::empty(), dev) {
            Ok(()) => {}
            // runc leaves a node that is already there (a default device, a bind).
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(e) => return Err(format!("creating device {shown}: {}", e.desc())),
        }
        // mknod's mode went through the umask; the spec's is exact.
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(device.mode))
            .map_err(|e| format!("setting the mode of device {shown}: {e}"))?;
        std::os::unix::fs::chown(&dest, Some(device.uid), Some(device.gid))
            .map_err(|e| format!("setting the owner of device {shown}: {e}"))?;
    }
    Ok(())
}

fn bind_guest_node(dest: &Path, device: &DevicePlan) -> Result<(), String> {
    let shown = device.path.display();
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating the mount point of device {shown}: {e}")),
    }
    nix::mount::mount(
        Some(&device.path),
        dest,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| {
        format!(
            "binding the guest's {shown} (a user namespace may not mknod): {}",
            e.desc()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(json: serde_json::Value) -> Vec<LinuxDevice> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn entries_become_nodes_to_make() {
        let planned = plan(&devices(serde_json::json!([
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
             "fileMode": 0o620, "uid": 1000, "gid": 5},
            {"path": "/dev/loop9", "type": "b", "major": 7, "minor": 9},
            {"path": "/dev/fifo", "type": "p"},
        ])))
        .unwrap();
        assert_eq!(
            planned[0],
            DevicePlan {
                path: "/dev/fuse".into(),
                kind: SFlag::S_IFCHR,
                major: 10,
                minor: 229,
                mode: 0o620,
                uid: 1000,
                gid: 5
            }
        );
        assert_eq!(planned[1].kind, SFlag::S_IFBLK);
        assert_eq!((planned[1].mode, planned[1].uid), (0o666, 0));
        assert_eq!(planned[2].kind, SFlag::S_IFIFO);
    }

    #[test]
    fn bad_entries_are_named() {
        for (entry, needle) in [
            (
                serde_json::json!({"path": "dev/x", "type": "c", "major": 1, "minor": 3}),
                "not an absolute path",
            ),
            (
                serde_json::json!({"path": "/dev/../etc/x", "type": "c", "major": 1, "minor": 3}),
                "'..'",
            ),
            (
                serde_json::json!({"path": "/dev/x", "type": "a", "major": 1, "minor": 3}),
                "type \"a\"",
            ),
            (
                serde_json::json!({"path": "/dev/x", "type": "c", "major": -1, "minor": 3}),
                "major:minor -1:3",
            ),
            (
                serde_json::json!({"path": "/dev/x", "type": "c", "major": 4096, "minor": 3}),
                "major:minor 4096:3",
            ),
            (
                serde_json::json!({"path": "/dev/x", "type": "c", "major": 1, "minor": 3,
                                   "fileMode": 0o170666}),
                "file mode",
            ),
        ] {
            let err = plan(&devices(serde_json::json!([entry]))).unwrap_err();
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }
}
