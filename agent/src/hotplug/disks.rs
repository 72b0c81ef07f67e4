//! Disks: a hot-added virtio-blk device is found by the serial the host gave it. Before
//! the VMM takes one away, the guest must let go of it: Linux's ACPI container handler
//! refuses to eject a slot that is online, and the virtio-mmio platform device of a slot
//! outlives the eject (its ACPI node is static), so its driver is unbound here, which
//! removes the block device, and the slot is offlined (see `slots`).

use std::path::Path;
use std::time::Instant;

use super::{read, HotplugError, POLL};

/// A block device of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// vda, vdb, ...
    pub name: String,
    pub major: u32,
    pub minor: u32,
    pub size_bytes: u64,
}

impl Disk {
    pub fn dev_path(&self) -> String {
        format!("/dev/{}", self.name)
    }
}

/// The same rule as the host's DiskSpec: a serial is also a path component here.
fn check_serial(serial: &str) -> Result<(), HotplugError> {
    let ok = (1..=20).contains(&serial.len())
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(HotplugError::BadSerial(serial.to_string()))
    }
}

/// Waits until a block device with `serial` exists, until `deadline`.
pub fn wait_disk(sys: &Path, serial: &str, deadline: Instant) -> Result<Disk, HotplugError> {
    check_serial(serial)?;
    let started = Instant::now();
    loop {
        if let Some(disk) = find(sys, serial)? {
            return Ok(disk);
        }
        if Instant::now() >= deadline {
            return Err(HotplugError::DiskTimeout {
                serial: serial.to_string(),
                waited: started.elapsed(),
                seen: block_names(sys).join(", "),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Unbinds the driver of the disk with `serial` and offlines its hotplug slot; returns
/// once its block device is gone, or fails at `deadline`. `mountinfo` is the text of
/// /proc/self/mountinfo: a mounted disk is refused.
pub fn release_disk(
    sys: &Path,
    mountinfo: &str,
    serial: &str,
    deadline: Instant,
) -> Result<(), HotplugError> {
    check_serial(serial)?;
    let disk = find(sys, serial)?.ok_or_else(|| HotplugError::NoSuchDisk(serial.to_string()))?;
    if let Some(mount_point) = mounted_at(mountinfo, disk.major, disk.minor) {
        return Err(HotplugError::DiskMounted {
            serial: serial.to_string(),
            device: disk.dev_path(),
            mount_point,
        });
    }
    let device_link = sys.join("block").join(&disk.name).join("device");
    let released = super::slots::release(sys, &device_link).map_err(|e| match e {
        super::slots::SlotError::NotInSlot(why) => HotplugError::NotHotplugged {
            serial: serial.to_string(),
            device: disk.dev_path(),
            why,
        },
        super::slots::SlotError::Sysfs(e) => e,
    })?;
    if released == super::slots::Released::OnPci {
        return Ok(());
    }
    let started = Instant::now();
    while sys.join("block").join(&disk.name).exists() {
        if Instant::now() >= deadline {
            return Err(HotplugError::StillPresent {
                serial: serial.to_string(),
                device: disk.dev_path(),
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// The block device whose virtio serial is `serial`, if one is there now.
fn find(sys: &Path, serial: &str) -> Result<Option<Disk>, HotplugError> {
    for name in block_names(sys) {
        let dir = sys.join("block").join(&name);
        // Only virtio-blk disks have a serial attribute; a read racing a removal is no match.
        let Ok(theirs) = std::fs::read_to_string(dir.join("serial")) else {
            continue;
        };
        if theirs.trim_end_matches(['\n', '\0']) != serial {
            continue;
        }
        let dev_path = dir.join("dev");
        let dev = read(&dev_path)?;
        let (major, minor) = dev
            .trim()
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| HotplugError::Parse {
                path: dev_path.clone(),
                text: dev.clone(),
            })?;
        let size_path = dir.join("size");
        let sectors = read(&size_path)?;
        let size_bytes = sectors
            .trim()
            .parse::<u64>()
            .ok()
            .and_then(|s| s.checked_mul(512))
            .ok_or_else(|| HotplugError::Parse {
                path: size_path,
                text: sectors.clone(),
            })?;
        return Ok(Some(Disk {
            name,
            major,
            minor,
            size_bytes,
        }));
    }
    Ok(None)
}

fn block_names(sys: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sys.join("block"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Where the device `major:minor` is mounted, per mountinfo's third field.
fn mounted_at(mountinfo: &str, major: u32, minor: u32) -> Option<String> {
    let dev = format!("{major}:{minor}");
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2)?;
        let mount_point = fields.nth(1)?;
        (device == dev).then(|| mount_point.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    /// A sysfs with one hot-added disk vda (serial "hot1", 254:0, 8 MiB) in slot
    /// ACPI0004:01, laid out as Linux lays out ward-vmm's ACPI virtio-mmio devices.
    fn sysfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        let platform = s.join("devices/platform/LNRO0005:02");
        let virtio = platform.join("virtio2");
        let disk = virtio.join("block/vda");
        fs::create_dir_all(&disk).unwrap();
        fs::write(disk.join("serial"), "hot1\n").unwrap();
        fs::write(disk.join("dev"), "254:0\n").unwrap();
        fs::write(disk.join("size"), "16384\n").unwrap();
        symlink(&virtio, disk.join("device")).unwrap();
        fs::create_dir_all(s.join("block")).unwrap();
        symlink(&disk, s.join("block/vda")).unwrap();
        let node = s.join("devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:01/LNRO0005:02");
        fs::create_dir_all(&node).unwrap();
        symlink(&node, platform.join("firmware_node")).unwrap();
        fs::create_dir_all(s.join("bus/platform/drivers/virtio-mmio")).unwrap();
        fs::create_dir_all(s.join("bus/container/devices/ACPI0004:01")).unwrap();
        dir
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(100)
    }

    #[test]
    fn finds_a_disk_by_serial() {
        let dir = sysfs();
        let disk = wait_disk(dir.path(), "hot1", soon()).unwrap();
        assert_eq!(
            disk,
            Disk {
                name: "vda".into(),
                major: 254,
                minor: 0,
                size_bytes: 8 << 20
            }
        );
        assert_eq!(disk.dev_path(), "/dev/vda");
        let err = wait_disk(dir.path(), "other", soon()).unwrap_err();
        assert!(matches!(err, HotplugError::DiskTimeout { .. }), "{err}");
        assert!(err.to_string().contains("vda"), "{err}");
    }

    #[test]
    fn release_unbinds_the_driver_and_offlines_the_slot() {
        let dir = sysfs();
        let s = dir.path();
        // The plain-file tree does not make vda vanish as the kernel does: release must
        // do both writes, then time out waiting for the device to go.
        let err = release_disk(s, "", "hot1", soon()).unwrap_err();
        assert!(matches!(err, HotplugError::StillPresent { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(s.join("bus/platform/drivers/virtio-mmio/unbind")).unwrap(),
            "LNRO0005:02"
        );
        assert_eq!(
            fs::read_to_string(s.join("bus/container/devices/ACPI0004:01/online")).unwrap(),
            "0"
        );
    }

    #[test]
    fn a_mounted_disk_is_refused_and_left_alone() {
        let dir = sysfs();
        let mountinfo = "22 1 254:0 / /data rw,relatime - ext4 /dev/vda rw\n";
        let err = release_disk(dir.path(), mountinfo, "hot1", soon()).unwrap_err();
        assert!(err.to_string().contains("mounted at /data"), "{err}");
        assert!(!dir
            .path()
            .join("bus/platform/drivers/virtio-mmio/unbind")
            .exists());
    }

    #[test]
    fn a_disk_outside_a_slot_is_not_released() {
        let dir = sysfs();
        fs::remove_file(
            dir.path()
                .join("devices/platform/LNRO0005:02/firmware_node"),
        )
        .unwrap();
        let err = release_disk(dir.path(), "", "hot1", soon()).unwrap_err();
        assert!(matches!(err, HotplugError::NotHotplugged { .. }), "{err}");
    }

    #[test]
    fn bad_serials_and_unknown_disks() {
        let dir = sysfs();
        for bad in ["", "../x", "a/b", "123456789012345678901"] {
            assert!(matches!(
                wait_disk(dir.path(), bad, soon()),
                Err(HotplugError::BadSerial(_))
            ));
        }
        assert!(matches!(
            release_disk(dir.path(), "", "nope", soon()),
            Err(HotplugError::NoSuchDisk(_))
        ));
    }
}
