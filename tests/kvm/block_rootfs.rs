//! Block devices with ward-vmm: a rootfs on one (the loop device under a mounted ext4 image
//! of the bundle's files is hot-added as a virtio-mmio disk and is the guest's `/`), and
//! one passed through with `linux.devices`.

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

/// `linux.devices` with ward-vmm: a host loop device is hot-added as a virtio-mmio disk,
/// appears at the spec's path, and the container's write reaches the host's device.
#[test]
fn builtin_passes_a_host_block_device_through() {
    require_hardware_kvm();
    let ward = Ward::new();
    require_vmm(&ward);
    let config = ward.config_with("builtin.toml", "[hypervisor]\nbackend = \"builtin\"");
    let backing = ward.bundle("unused", &["true"]).join("disk.img");
    let mut data = b"ward-device-marker".to_vec();
    data.resize(4 << 20, 0);
    std::fs::write(&backing, data).unwrap();
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output()
        .expect("losetup");
    assert!(out.status.success(), "losetup: {}", text(&out.stderr));
    let device = text(&out.stdout).trim().to_string();
    let detach = Detach(device.clone());
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(&device).unwrap().rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let bundle = ward.bundle(
        "dev",
        &[
            "sh",
            "-c",
            "head -c 18 /dev/xvdb; echo; echo written > /dev/xvdb; sync",
        ],
    );
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["linux"]["devices"] = serde_json::json!([{"path": "/dev/xvdb", "type": "b",
        "major": major, "minor": minor, "fileMode": 0o660, "uid": 0, "gid": 0}]);
    spec["linux"]["resources"]["devices"] = serde_json::json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "b", "major": major, "minor": minor, "access": "rwm"},
    ]);
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let mut command = ward.command();
    command
        .env("WARD_CONFIG", &config)
        .args(["run", "--bundle", bundle.to_str().unwrap(), "dev"]);
    eprintln!("[kvm] run with a passed-through device");
    let out = ward_e2e::output_within(&mut command, super::COMMAND_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "ward run did not finish within {} s\n{}",
            super::COMMAND_TIMEOUT.as_secs(),
            super::hang_report(&ward, "dev")
        )
    });
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said} {}", text(&out.stderr));
    assert!(said.contains("ward-device-marker"), "{said}");
    let written = std::fs::read(&device).expect("reading the loop device back");
    assert!(
        written.starts_with(b"written\n"),
        "the write did not reach the host"
    );
    drop(detach);
}

/// Detaches a loop device when dropped.
struct Detach(String);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}
