//! The spec's `linux.devices` seen from a VM: which host devices cross into the guest, and
//! how.
//!
//! In runc a device entry is a node made from the host's major:minor. In a VM those
//! numbers name the guest's devices, not the host's. So:
//! - a host block device (`podman run --device /dev/loop3`) is hot-added to the VM as a
//!   disk, and the entry is rewritten to the number the guest gave it;
//! - a character device the guest has too (null, zero, full, random, urandom, kmsg, tty,
//!   console, ptmx, tun, fuse) stays as it is: the guest's own device serves it;
//! - any other character device (a GPU, a host serial port) cannot cross into a VM, and
//!   is refused rather than silently becoming something else.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, Spec};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DeviceError {
    #[error("linux.devices: host character device {path} ({major}:{minor}) cannot cross into a VM; only block devices are passed through (hot-added as disks), and the guest's own null, zero, full, random, urandom, kmsg, tty, console, ptmx, tun and fuse")]
    CharacterDevice {
        path: PathBuf,
        major: i64,
        minor: i64,
    },
}

/// Character devices every guest has, by (major, minor); `None` is any minor.
const GUEST_CHAR_DEVICES: [(i64, Option<i64>); 11] = [
    (1, Some(3)),    // null
    (1, Some(5)),    // zero
    (1, Some(7)),    // full
    (1, Some(8)),    // random
    (1, Some(9)),    // urandom
    (1, Some(11)),   // kmsg
    (5, Some(0)),    // tty
    (5, Some(1)),    // console
    (5, Some(2)),    // ptmx
    (10, Some(200)), // net/tun
    (10, Some(229)), // fuse
];

/// One host block device to pass through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// The entry's position in linux.devices.
    pub index: usize,
    /// Where the container sees it.
    pub path: PathBuf,
    pub major: i64,
    pub minor: i64,
}

fn guest_has(major: i64, minor: i64) -> bool {
    GUEST_CHAR_DEVICES
        .iter()
        .any(|(ma, mi)| *ma == major && mi.is_none_or(|mi| mi == minor))
}

/// The host block devices of `spec` to hot-add; fails on a character device the guest
/// cannot provide. `host_has_block` answers whether the host has block device
/// major:minor (a block entry naming none stays a plain node, as runc would make it).
pub fn plan(
    spec: &Spec,
    host_has_block: impl Fn(i64, i64) -> bool,
) -> Result<Vec<BlockDevice>, DeviceError> {
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    let mut blocks = Vec::new();
    for (index, device) in devices.iter().enumerate() {
        let (major, minor) = (device.major(), device.minor());
        match device.typ() {
            LinuxDeviceType::B if host_has_block(major, minor) => {
                blocks.push(BlockDevice {
                    index,
                    path: device.path().clone(),
                    major,
                    minor,
                });
            }
            LinuxDeviceType::C | LinuxDeviceType::U if !guest_has(major, minor) => {
                return Err(DeviceError::CharacterDevice {
                    path: device.path().clone(),
                    major,
                    minor,
                });
            }
            // FIFOs are made in the guest as they are on a host.
            _ => {}
        }
    }
    Ok(blocks)
}

/// Whether the host has block device major:minor.
pub fn host_has_block(major: i64, minor: i64) -> bool {
    Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists()
}

/// Points entry `device.index` and the device cgroup rules that allow the host's numbers
/// at the numbers the guest gave the hot-added disk.
pub fn retarget(spec: &mut Spec, device: &BlockDevice, guest_major: i64, guest_minor: i64) {
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    if let Some(mut devices) = linux.devices().clone() {
        if let Some(entry) = devices.get_mut(device.index) {
            entry.set_major(guest_major);
            entry.set_minor(guest_minor);
        }
        linux.set_devices(Some(devices));
    }
    let Some(resources) = linux.resources_mut() else {
        return;
    };
    let Some(rules) = resources.devices().clone() else {
        return;
    };
    let rules: Vec<LinuxDeviceCgroup> = rules
        .into_iter()
        .map(|mut rule| {
            let block = matches!(rule.typ(), Some(LinuxDeviceType::B));
            if block && rule.major() == Some(device.major) && rule.minor() == Some(device.minor) {
                rule.set_major(Some(guest_major));
                rule.set_minor(Some(guest_minor));
            }
            rule
        })
        .collect();
    resources.set_devices(Some(rules));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(devices: serde_json::Value, rules: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
            "linux": {"devices": devices, "resources": {"devices": rules}},
        }))
        .unwrap()
    }

    #[test]
    fn host_block_devices_are_passed_through_and_guest_char_devices_kept() {
        let s = spec(
            serde_json::json!([
                {"path": "/dev/null2", "type": "c", "major": 1, "minor": 3},
                {"path": "/dev/xvda", "type": "b", "major": 7, "minor": 3},
                {"path": "/dev/nothere", "type": "b", "major": 7, "minor": 200},
                {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200},
            ]),
            serde_json::json!([]),
        );
        let blocks = plan(&s, |ma, mi| (ma, mi) == (7, 3)).unwrap();
        assert_eq!(
            blocks,
            [BlockDevice {
                index: 1,
                path: "/dev/xvda".into(),
                major: 7,
                minor: 3
            }]
        );
    }

    #[test]
    fn a_host_only_character_device_is_refused_by_name() {
        let s = spec(
            serde_json::json!([{"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}]),
            serde_json::json!([]),
        );
        let err = plan(&s, |_, _| false).unwrap_err();
        assert!(err.to_string().contains("/dev/nvidia0 (195:0)"), "{err}");
    }

    #[test]
    fn retargeting_rewrites_the_entry_and_its_cgroup_rule() {
        let mut s = spec(
            serde_json::json!([{"path": "/dev/xvda", "type": "b", "major": 7, "minor": 3}]),
            serde_json::json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "b", "major": 7, "minor": 3, "access": "rwm"},
                {"allow": true, "type": "c", "major": 7, "minor": 3, "access": "rwm"},
            ]),
        );
        let device = plan(&s, |_, _| true).unwrap().remove(0);
        retarget(&mut s, &device, 254, 16);
        let linux = s.linux().as_ref().unwrap();
        let entry = &linux.devices().as_ref().unwrap()[0];
        assert_eq!((entry.major(), entry.minor()), (254, 16));
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .as_ref()
            .unwrap();
        assert_eq!((rules[1].major(), rules[1].minor()), (Some(254), Some(16)));
        assert_eq!(
            (rules[2].major(), rules[2].minor()),
            (Some(7), Some(3)),
            "char rule stays"
        );
    }
}
