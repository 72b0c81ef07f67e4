//! Shared filesystems: the container's root reaches the guest over virtio-9p today;
//! virtio-fs (virtiofsd) is the way forward.

use super::report::Item;
use super::Lookup;

/// The 9p device QEMU needs for `machine` (microvm has no PCI).
fn ninep_device(machine: &str) -> &'static str {
    if machine == "microvm" {
        "virtio-9p-device"
    } else {
        "virtio-9p-pci"
    }
}

/// Whether `-device help` output lists the device `name` exactly.
pub fn lists_device(device_help: &str, name: &str) -> bool {
    let quoted = format!("name \"{name}\"");
    device_help
        .lines()
        .any(|l| l.trim_start().starts_with(&quoted))
}

/// `device_help`: the output of `qemu -device help` (Err: why it could not be had).
pub fn check(device_help: &Result<String, String>, machine: &str, virtiofsd: &Lookup) -> Vec<Item> {
    let needed = ninep_device(machine);
    let ninep = match device_help {
        Ok(help) => {
            let found: Vec<&str> = ["virtio-9p-pci", "virtio-9p-device"]
                .into_iter()
                .filter(|d| lists_device(help, d))
                .collect();
            if found.contains(&needed) {
                Item::pass(
                    "sharedfs.9p",
                    format!("QEMU has {needed} (for machine {machine})"),
                )
                .detail(format!("9p devices: {}", found.join(", ")))
            } else {
                Item::fail(
                    "sharedfs.9p",
                    format!("QEMU lacks {needed}, which machine {machine} needs for the root filesystem"),
                    "install a QEMU built with virtfs (Debian: qemu-system-x86)",
                )
            }
        }
        Err(why) => Item::fail(
            "sharedfs.9p",
            format!("cannot list QEMU's devices: {why}"),
            "see the QEMU items below",
        ),
    };
    let virtiofs = match virtiofsd {
        Lookup::InPath(path) | Lookup::OutsidePath(path) => Item::pass(
            "sharedfs.virtiofsd",
            format!("virtiofsd at {}", path.display()),
        ),
        Lookup::Missing => Item::warn(
            "sharedfs.virtiofsd",
            "virtiofsd is not installed (ward does not use virtio-fs yet; it will)",
            "apt-get install virtiofsd (or qemu-system-common on older Debian)",
        ),
    };
    vec![ninep, virtiofs]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Status;
    use std::path::PathBuf;

    const HELP: &str = "Storage devices:\nname \"virtio-9p-device\", bus virtio-bus\nname \"virtio-9p-pci\", bus PCI, alias \"virtio-9p\"\nname \"virtio-9p-pci-transitional\", bus PCI\n";

    #[test]
    fn finds_the_device_the_machine_needs() {
        let have = Lookup::InPath(PathBuf::from("/usr/bin/virtiofsd"));
        let items = check(&Ok(HELP.into()), "microvm", &have);
        assert!(items.iter().all(|i| i.status == Status::Pass), "{items:?}");
        let pci_only = "name \"virtio-9p-pci\", bus PCI\n".to_string();
        assert_eq!(
            check(&Ok(pci_only.clone()), "microvm", &have)[0].status,
            Status::Fail
        );
        assert_eq!(check(&Ok(pci_only), "q35", &have)[0].status, Status::Pass);
    }

    #[test]
    fn missing_virtiofsd_only_warns() {
        let items = check(&Ok(HELP.into()), "microvm", &Lookup::Missing);
        assert_eq!(items[1].status, Status::Warn);
    }
}
