//! Network cards: before the VMM unplugs a hot-added NIC (a pod member's own), the guest
//! lets go of it like a disk (`slots`). The NIC is found by its MAC among the interfaces
//! of the guest's own namespace, where RemoveNetwork has just brought it back.

use std::path::Path;
use std::time::Instant;

use super::{read, slots, HotplugError, POLL};

/// The interface of the agent's namespace with `mac` ("aa:bb:…", lower case).
fn find(sys: &Path, mac: &str) -> Option<String> {
    let dir = std::fs::read_dir(sys.join("class/net")).ok()?;
    dir.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| {
            read(&sys.join("class/net").join(name).join("address"))
                .is_ok_and(|a| a.trim().eq_ignore_ascii_case(mac))
        })
}

/// Releases the NIC with `mac` and waits until its interface is gone, until `deadline`.
/// A NIC that is not there (gone already) is fine.
pub fn release_nic(sys: &Path, mac: &str, deadline: Instant) -> Result<(), HotplugError> {
    let Some(name) = find(sys, mac) else {
        return Ok(());
    };
    let interface = sys.join("class/net").join(&name);
    let released = slots::release(sys, &interface.join("device")).map_err(|e| match e {
        slots::SlotError::NotInSlot(why) => HotplugError::NicNotHotplugged {
            mac: mac.to_string(),
            name: name.clone(),
            why,
        },
        slots::SlotError::Sysfs(e) => e,
    })?;
    if released == slots::Released::OnPci {
        return Ok(());
    }
    let started = Instant::now();
    while interface.exists() {
        if Instant::now() >= deadline {
            return Err(HotplugError::NicStillPresent {
                mac: mac.to_string(),
                name,
                waited: started.elapsed(),
            });
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    /// eth1 (02:00:00:00:00:02) in slot ACPI0004:01 as virtio-mmio LNRO0005:02; eth0 on PCI.
    fn sysfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        let slot = s.join("devices/LNXSYSTM:00/ACPI0004:01/LNRO0005:02");
        fs::create_dir_all(&slot).unwrap();
        let platform = s.join("devices/platform/LNRO0005:02");
        fs::create_dir_all(platform.join("virtio3/net/eth1")).unwrap();
        symlink(&slot, platform.join("firmware_node")).unwrap();
        symlink(s.join("bus/platform"), platform.join("subsystem")).unwrap();
        fs::create_dir_all(s.join("bus/platform/drivers/virtio-mmio")).unwrap();
        fs::create_dir_all(s.join("bus/container/devices/ACPI0004:01")).unwrap();
        fs::create_dir_all(s.join("class/net/eth1")).unwrap();
        fs::write(s.join("class/net/eth1/address"), "02:00:00:00:00:02\n").unwrap();
        symlink(platform.join("virtio3"), s.join("class/net/eth1/device")).unwrap();
        let pci = s.join("devices/pci0000:00/0000:00:03.0");
        fs::create_dir_all(pci.join("virtio1")).unwrap();
        fs::create_dir_all(s.join("bus/pci")).unwrap();
        symlink(s.join("bus/pci"), pci.join("subsystem")).unwrap();
        fs::create_dir_all(s.join("class/net/eth0")).unwrap();
        fs::write(s.join("class/net/eth0/address"), "02:00:00:00:00:01\n").unwrap();
        symlink(pci.join("virtio1"), s.join("class/net/eth0/device")).unwrap();
        dir
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(100)
    }

    #[test]
    fn a_nic_in_a_slot_is_unbound_and_its_slot_offlined() {
        let dir = sysfs();
        let s = dir.path();
        // The plain files do not vanish as the kernel's would: both writes, then a timeout.
        let err = release_nic(s, "02:00:00:00:00:02", soon()).unwrap_err();
        assert!(matches!(err, HotplugError::NicStillPresent { .. }), "{err}");
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
    fn a_pci_nic_or_one_gone_already_needs_nothing() {
        let dir = sysfs();
        let s = dir.path();
        fs::remove_dir_all(s.join("class/net/eth0")).unwrap();
        release_nic(s, "02:00:00:00:00:01", soon()).unwrap();
        release_nic(s, "02:00:00:00:00:09", soon()).unwrap();
        assert!(!s.join("bus/platform/drivers/virtio-mmio/unbind").exists());
    }

    #[test]
    fn a_pci_nic_is_left_to_the_guest_kernel_without_a_wait() {
        let dir = sysfs();
        let s = dir.path();
        // eth0 is on PCI: it goes when the VMM unplugs it, after this returns.
        release_nic(s, "02:00:00:00:00:01", soon()).expect("no wait for a PCI card");
        assert!(!s.join("bus/platform/drivers/virtio-mmio/unbind").exists());
    }
}
