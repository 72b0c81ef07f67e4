//! The control socket against a real VM whose vCPU halts (`cli; hlt`): requests are
//! answered, hotplug requests are validated and signalled, and `shutdown` ends `run`.
//! Skipped where /dev/kvm is missing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ward_vmm::config::DeviceConfig;
use ward_vmm::vmm::{Payload, Vmm, VmmConfig};
use ward_vmm::vstate::vcpu::ExitReason;

fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

struct Client(BufReader<UnixStream>, UnixStream);

impl Client {
    fn connect(path: &Path) -> Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = UnixStream::connect(path) {
                return Client(BufReader::new(s.try_clone().unwrap()), s);
            }
            assert!(Instant::now() < deadline, "no API socket");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn call(&mut self, req: Value) -> Value {
        self.1.write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

#[test]
fn api_serves_requests_and_shuts_down() {
    if !kvm_available() {
        eprintln!("skipped: no /dev/kvm");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ward-vmm-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("api.sock");
    let disk = dir.join("d1.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let vmm = Vmm::new(
        VmmConfig {
            payload: Payload::Raw {
                code: vec![0xfa, 0xf4],
                addr: 0x1000,
            },
            vcpus: 1,
            max_vcpus: 3,
            memory_mib: 32,
            serial_log: dir.join("serial.log"),
            api_socket: Some(sock.clone()),
            devices: DeviceConfig::default(),
            acpi: true,
            emulated_ring0: false,
        },
        slog::Logger::root(slog::Discard, slog::o!()),
    )
    .unwrap();
    let runner = std::thread::spawn(move || vmm.run().unwrap());
    let mut c = Client::connect(&sock);

    assert_eq!(c.call(json!({"op": "ping"})), json!({"ok": true}));
    let info = c.call(json!({"op": "info"}));
    assert_eq!(info["vcpus"], json!({"online": 1, "max": 3}));
    assert_eq!(info["memory_mib"], 32);

    assert_eq!(c.call(json!({"op": "set_vcpus", "count": 4}))["ok"], false);
    assert_eq!(c.call(json!({"op": "set_vcpus", "count": 3}))["ok"], true);
    assert_eq!(c.call(json!({"op": "info"}))["vcpus"]["online"], 3);

    let add = json!({"op": "add_disk", "id": "d1", "path": disk, "readonly": true});
    assert_eq!(c.call(add.clone())["ok"], true);
    assert_eq!(c.call(add)["ok"], false, "same id twice");
    let missing = json!({"op": "add_disk", "id": "d2", "path": dir.join("nope.img")});
    let r = c.call(missing);
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("nope.img"), "{r}");
    let info = c.call(json!({"op": "info"}));
    assert_eq!(info["disks"][0]["id"], "d1");
    assert_eq!(c.call(json!({"op": "remove_disk", "id": "d1"}))["ok"], true);
    assert_eq!(
        c.call(json!({"op": "remove_disk", "id": "zz"}))["ok"],
        false
    );
    assert_eq!(c.call(json!({"op": "nonsense"}))["ok"], false);

    // The halted guest never powers off by itself: the grace period ends the VM.
    let r = c.call(json!({"op": "shutdown", "grace_ms": 100}));
    assert_eq!(r["ok"], true);
    assert_eq!(runner.join().unwrap(), ExitReason::PowerOff);
    assert!(!sock.exists(), "the API socket is removed at exit");
    std::fs::remove_dir_all(&dir).unwrap();
}
