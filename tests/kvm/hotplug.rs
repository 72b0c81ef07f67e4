//! Hotplug through the runtime's own calls (`Sandbox::set_vcpus`, `add_disk`,
//! `remove_disk`) on a running container's VM, seen from inside the container.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Instant;

use ward_e2e::Ward;
use ward_hypervisor::DiskSpec;
use ward_runtime::config::Config;
use ward_runtime::container::store::Store;
use ward_runtime::sandbox::Sandbox;

use super::{exec, kill_and_delete, require_hardware_kvm, require_vmm, start_bundle};

const MARKER: &[u8] = b"ward-hotplug-marker";

#[test]
fn builtin_hotplug_onlines_vcpus_and_adds_and_removes_a_disk() {
    require_hardware_kvm();
    let ward = Ward::new();
    require_vmm(&ward);
    let config_path = ward.config_with("builtin.toml", "[hypervisor]\nbackend = \"builtin\"");
    // The container may use block devices: the hot-added disk gets a node of its own
    // there (the device cgroup would refuse it otherwise, as it should).
    let bundle = ward.bundle("hp", &["sleep", "100000"]);
    let spec_path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    spec["linux"]["resources"]["devices"]
        .as_array_mut()
        .expect("the bundle has device rules")
        .push(serde_json::json!({"allow": true, "type": "b", "access": "rwm"}));
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    start_bundle(&ward, &config_path, "hp", &bundle);
    let config = Config::from_file(&config_path).expect("the test configuration");
    let state = Store::new(ward.root.clone())
        .load("hp")
        .expect("the container's state");
    let vm = state.vm.expect("a running container has a VM");
    let sandbox = Sandbox::attach(&config, vm).expect("attaching to the VM");
    // A connection per call, as ward's own commands make: none stays open across the
    // container's execs.
    let agent = || sandbox.agent().expect("the agent");
    let console = sandbox.vm.console_log.clone();
    let in_container = |args: &[&str]| {
        let (code, out, err) = exec(&ward, &config_path, "hp", args);
        assert_eq!(
            code,
            Some(0),
            "exec {args:?}: {err}\nthe guest console ends with:\n{}",
            ward_hypervisor::console_tail(&console, 40)
        );
        out
    };
    assert_eq!(in_container(&["nproc"]).trim(), "1");

    // vCPUs: the VMM adds one, the agent onlines it; the container sees it.
    let started = Instant::now();
    let online = sandbox.set_vcpus(&agent(), 2).expect("set_vcpus 2");
    let cpu_add = started.elapsed();
    assert_eq!(online, "0-1");
    assert_eq!(in_container(&["nproc"]).trim(), "2");
    let started = Instant::now();
    let online = sandbox.set_vcpus(&agent(), 1).expect("set_vcpus 1");
    let cpu_remove = started.elapsed();
    assert_eq!(online, "0");
    assert_eq!(in_container(&["nproc"]).trim(), "1");

    // A disk: the guest reads what the host wrote and the host reads what the guest wrote.
    let image = ward.dir.path().join("hot.img");
    let mut file = std::fs::File::create(&image).unwrap();
    file.set_len(8 << 20).unwrap();
    file.write_all(MARKER).unwrap();
    drop(file);
    let disk = DiskSpec {
        id: "hot1".into(),
        path: image.clone(),
        read_only: false,
    };
    let started = Instant::now();
    let info = sandbox.add_disk(&agent(), &disk).expect("add_disk");
    let disk_add = started.elapsed();
    assert_eq!(info.size_bytes, 8 << 20);
    let node = format!(
        "mknod /dev/hot b {} {} && dd if=/dev/hot bs={} count=1 2>/dev/null && \
         echo guest-wrote | dd of=/dev/hot bs=4096 seek=1 conv=fsync 2>/dev/null",
        info.major,
        info.minor,
        MARKER.len()
    );
    assert_eq!(in_container(&["sh", "-c", &node]).as_bytes(), MARKER);
    let mut back = vec![0u8; 12];
    let mut file = std::fs::File::open(&image).unwrap();
    file.seek(SeekFrom::Start(4096)).unwrap();
    file.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"guest-wrote\n");

    let block = info.path.trim_start_matches("/dev/").to_string();
    assert!(in_container(&["ls", "/sys/block"]).contains(&block));
    let started = Instant::now();
    sandbox.remove_disk(&agent(), "hot1").expect("remove_disk");
    let disk_remove = started.elapsed();
    let listed = in_container(&["ls", "/sys/block"]);
    assert!(!listed.contains(&block), "{block} still there: {listed}");
    let (code, _, _) = exec(&ward, &config_path, "hp", &["dd", "if=/dev/hot", "count=1"]);
    assert_ne!(code, Some(0), "the removed disk still reads");
    eprintln!(
        "hotplug times through the runtime (builtin): vCPU add+online {cpu_add:?}, \
         vCPU remove {cpu_remove:?}, disk add until the guest has it {disk_add:?}, \
         disk release+eject {disk_remove:?}"
    );
    kill_and_delete(&ward, &config_path, "hp");
}
