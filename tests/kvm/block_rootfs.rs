//! A rootfs on a block device with ward-vmm: the loop device under a mounted ext4 image
//! of the bundle's files is hot-added as a virtio-mmio disk and is the guest's `/`.

use std::process::Command;

use ward_e2e::mounted_image::{is_disk_root, MountedImage};
use ward_e2e::{text, Ward};

use super::{require_hardware_kvm, require_vmm};

#[test]
fn builtin_runs_a_container_on_a_block_device_rootfs() {
    require_hardware_kvm();
    let ward = Ward::new();
    require_vmm(&ward);
    let config = ward.config_with("builtin.toml", "[hypervisor]\nbackend = \"builtin\"");
    let bundle = ward.bundle(
        "blockroot",
        &[
            "sh",
            "-c",
            "grep ' / ' /proc/mounts; cat /etc/ward-image-marker; echo from-vmm > /written; sync",
        ],
    );
    let rootfs = bundle.join("rootfs");
    std::fs::write(rootfs.join("etc/ward-image-marker"), "from-the-image\n").unwrap();
    let image = MountedImage::new(&rootfs, bundle.join("rootfs.img"), &rootfs);
    let mut command = ward.command();
    command.env("WARD_CONFIG", &config).args([
        "run",
        "--bundle",
        bundle.to_str().unwrap(),
        "blockroot",
    ]);
    eprintln!("[kvm] run on a block rootfs");
    let started = std::time::Instant::now();
    let out = ward_e2e::output_within(&mut command, super::COMMAND_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "ward run did not finish within {} s\n{}",
            super::COMMAND_TIMEOUT.as_secs(),
            super::hang_report(&ward, "blockroot")
        )
    });
    eprintln!("[kvm] ran in {:?}", started.elapsed());
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said} {}", text(&out.stderr));
    assert!(
        is_disk_root(said.lines().next().unwrap_or_default()),
        "{said}"
    );
    assert!(said.contains("from-the-image"), "{said}");
    image.unmount();
    let out = Command::new("debugfs")
        .args(["-R", "cat /written"])
        .arg(&image.image)
        .output()
        .expect("debugfs");
    assert_eq!(
        text(&out.stdout).trim(),
        "from-vmm",
        "{}",
        text(&out.stderr)
    );
}
