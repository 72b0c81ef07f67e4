//! `linux.devices` in a VM (`podman run --device /dev/loopN`): a host block device is
//! hot-added to the container's VM as a disk and appears at the spec's path with the
//! guest's numbers; it goes away with the container. A host character device the guest
//! cannot have is refused by name.

use std::process::Command;

use ward_e2e::{assert_fails_with, text, Ward};

/// A loop device over a 4 MiB file starting with `marker`; detached on drop.
struct Loop {
    device: String,
    _file: tempfile::NamedTempFile,
}

impl Loop {
    fn new(marker: &str) -> Loop {
        let file = tempfile::NamedTempFile::new().expect("backing file");
        let mut data = marker.as_bytes().to_vec();
        data.resize(4 << 20, 0);
        std::fs::write(file.path(), data).expect("writing the backing file");
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file.path())
            .output()
            .expect("losetup (apt-get install mount)");
        assert!(out.status.success(), "losetup: {}", text(&out.stderr));
        Loop {
            device: text(&out.stdout).trim().to_string(),
            _file: file,
        }
    }

    fn numbers(&self) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.device).expect("loop device").rdev();
        (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

fn with_devices(bundle: &std::path::Path, devices: serde_json::Value, rules: serde_json::Value) {
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["linux"]["devices"] = devices;
    spec["linux"]["resources"]["devices"] = rules;
    std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
}

#[test]
fn a_host_block_device_is_passed_through_and_a_host_only_char_device_refused() {
    let ward = Ward::new();
    let disk = Loop::new("ward-device-marker");
    let (major, minor) = disk.numbers();
    let bundle = ward.bundle(
        "dev",
        &[
            "sh",
            "-c",
            "ls -l /dev/xvdb; head -c 18 /dev/xvdb; echo; echo written > /dev/xvdb",
        ],
    );
    with_devices(
        &bundle,
        serde_json::json!([{"path": "/dev/xvdb", "type": "b", "major": major, "minor": minor,
                            "fileMode": 0o660, "uid": 0, "gid": 0}]),
        serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "b", "major": major, "minor": minor, "access": "rwm"},
        ]),
    );
    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), "dev"]);
    let said = text(&out.stdout);
    assert!(out.status.success(), "run: {said} {}", text(&out.stderr));
    assert!(
        said.contains("ward-device-marker"),
        "the container reads the host's device: {said}"
    );
    // The guest's virtio-blk numbers, not the host's loop numbers.
    assert!(!said.contains(&format!("{major}, {minor:>3}")), "{said}");
    let written = std::fs::read(&disk.device).expect("reading the loop device back");
    assert!(
        written.starts_with(b"written\n"),
        "the container's write reached the host's device"
    );
    ward.assert_nothing_left("dev");

    let bundle = ward.bundle("gpu", &["true"]);
    with_devices(
        &bundle,
        serde_json::json!([{"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0}]),
        serde_json::json!([]),
    );
    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), "gpu"]);
    assert_fails_with(
        &out,
        "host character device /dev/nvidia0 (195:0) cannot cross into a VM",
    );
    ward.assert_nothing_left("gpu");
}
