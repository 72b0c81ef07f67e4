//! Letting go of a hot-added virtio device before the VMM takes it away. On ward-vmm a
//! device sits in an ACPI0004 container (a hotplug slot) as a virtio-mmio platform device:
//! Linux's container handler refuses to eject a slot that is online, and the platform
//! device outlives the eject (its ACPI node is static), so its driver is unbound, which
//! removes what the guest made of the device (a block device, a network interface), and
//! the slot is offlined. On QEMU's q35 the device is on PCI, and the guest kernel
//! completes the VMM's PCIe native hot-unplug by itself: nothing is done here.

use std::path::{Path, PathBuf};

use super::{write, HotplugError};

pub enum SlotError {
    /// The device is not in a hotplug slot (the reason).
    NotInSlot(String),
    Sysfs(HotplugError),
}

impl From<HotplugError> for SlotError {
    fn from(e: HotplugError) -> Self {
        SlotError::Sysfs(e)
    }
}

/// What [`release`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The driver was unbound and the slot offlined: the device is going now.
    Unbound,
    /// A PCI device: it goes when the VMM unplugs it, which the caller must not wait for.
    OnPci,
}

/// Releases the virtio device that `device_link` (`…/block/vdX/device`,
/// `…/class/net/ethX/device`) points to. Returns without waiting for it to go.
pub fn release(sys: &Path, device_link: &Path) -> Result<Released, SlotError> {
    // The link is the virtio device; its parent is the transport's device.
    let virtio = resolve(device_link)?;
    let platform = virtio
        .parent()
        .ok_or_else(|| SlotError::NotInSlot(format!("{} has no parent", virtio.display())))?;
    let platform_name = file_name(platform);
    let on_pci = resolve(&platform.join("subsystem")).is_ok_and(|s| s.ends_with("bus/pci"));
    if on_pci {
        return Ok(Released::OnPci);
    }
    let slot = resolve(&platform.join("firmware_node"))
        .ok()
        .and_then(|node| node.parent().map(file_name))
        .filter(|parent| parent.starts_with("ACPI0004:"))
        .ok_or_else(|| {
            SlotError::NotInSlot(format!("{platform_name} is not in an ACPI0004 slot"))
        })?;
    write(
        &sys.join("bus/platform/drivers/virtio-mmio/unbind"),
        &platform_name,
    )?;
    write(
        &sys.join("bus/container/devices").join(&slot).join("online"),
        "0",
    )?;
    Ok(Released::Unbound)
}

pub(super) fn resolve(link: &Path) -> Result<PathBuf, HotplugError> {
    std::fs::canonicalize(link).map_err(|source| HotplugError::Read {
        path: link.to_path_buf(),
        source,
    })
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
