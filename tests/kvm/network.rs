//! The pod's network on ward-vmm's virtio-net: a network namespace made here (in L1) with
//! one end of a veth, the other end in L1's own namespace standing for an engine's
//! bridge; ward carries the namespace into the VM, and a server in the container answers
//! across it. Traffic stays between L1's namespaces.

use std::process::Command;
use std::time::{Duration, Instant};

use ward_e2e::{text, Ward};

use super::{exec, kill_and_delete, require_hardware_kvm, require_vmm, start_bundle};

const NETNS: &str = "ward-kvm-net";

fn sh(script: &str) {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("running sh");
    assert!(out.status.success(), "{script}: {}", text(&out.stderr));
}

/// A namespace with a veth whose other end (`host_end`, `10.<net>.0.1`) is in L1's own;
/// the namespace's end is `10.<net>.0.2`. Removed when dropped.
struct TestNetwork {
    netns: &'static str,
    host_end: &'static str,
}

impl TestNetwork {
    fn new() -> TestNetwork {
        TestNetwork::make(NETNS, "wkvm0", 99)
    }

    fn make(netns: &'static str, host_end: &'static str, net: u8) -> TestNetwork {
        let network = TestNetwork { netns, host_end };
        network.remove();
        sh(&format!(
            "ip netns add {netns} && ip link add {host_end} type veth peer name eth0 netns {netns} && \
             ip addr add 10.{net}.0.1/24 dev {host_end} && ip link set {host_end} up && \
             ip -n {netns} link set eth0 mtu 1400 up && \
             ip -n {netns} addr add 10.{net}.0.2/24 dev eth0 && \
             ip -n {netns} route add default via 10.{net}.0.1"
        ));
        network
    }

    fn remove(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", self.netns])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", self.host_end])
            .output();
    }

    /// The MAC of the namespace's end.
    fn mac(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", self.netns, "-o", "link", "show", "eth0"])
            .output()
            .expect("ip link");
        text(&out.stdout)
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Sets the network namespace and annotations of the bundle's spec.
fn configure(bundle: &std::path::Path, netns: &str, annotations: serde_json::Value) {
    let spec_path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = format!("/run/netns/{netns}").into();
        }
    }
    spec["annotations"] = annotations;
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
}

/// A pod on ward-vmm whose member brings a namespace of its own: its NIC is hot-added
/// to the running VM (a virtio-mmio slot announced through the GED), moved into a guest
/// namespace of its own, and answers on its own address; it leaves with the member.
#[test]
fn builtin_pod_member_brings_its_own_network() {
    require_hardware_kvm();
    let ward = Ward::new();
    require_vmm(&ward);
    let _pod_network = TestNetwork::new();
    let member_network = TestNetwork::make("ward-kvm-member", "wkvm1", 98);
    let config = ward.config_with("builtin.toml", "[hypervisor]\nbackend = \"builtin\"");
    let pod = ward.bundle("pod", &["sleep", "100000"]);
    configure(
        &pod,
        NETNS,
        serde_json::json!({
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": "pod",
        }),
    );
    start_bundle(&ward, &config, "pod", &pod);
    let member = ward.bundle(
        "member",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-from-the-member > /www/index.html && \
             exec httpd -f -p 80 -h /www",
        ],
    );
    configure(
        &member,
        member_network.netns,
        serde_json::json!({
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "pod",
        }),
    );
    let started = Instant::now();
    start_bundle(&ward, &config, "member", &member);
    eprintln!(
        "[kvm] member with its own NIC started in {:?}",
        started.elapsed()
    );
    let answer = ward_e2e::http_get("10.98.0.2:80".parse().unwrap(), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("GET http://10.98.0.2/ from L1: {e}"));
    assert!(answer.contains("hello-from-the-member"), "{answer}");

    let view = "cat /proc/sys/kernel/random/boot_id; ls /sys/class/net; \
                cat /sys/class/net/eth0/address";
    let (code, theirs, err) = exec(&ward, &config, "member", &["sh", "-c", view]);
    assert_eq!(code, Some(0), "exec: {err}");
    let (code, pods, err) = exec(&ward, &config, "pod", &["sh", "-c", view]);
    assert_eq!(code, Some(0), "exec: {err}");
    let theirs: Vec<&str> = theirs.lines().collect();
    let pods: Vec<&str> = pods.lines().collect();
    assert_eq!(theirs[0], pods[0], "one VM");
    assert_eq!(&theirs[1..3], ["eth0", "lo"], "{theirs:?}");
    assert!(
        member_network.mac().contains(theirs[3]),
        "member NIC {theirs:?}"
    );
    assert_ne!(theirs[3], pods[3], "the member sees the pod's NIC");

    kill_and_delete(&ward, &config, "member");
    // Its card is gone from the VM: the pod's namespace has its own NIC only, and the
    // guest's PCI-less virtio list lost one network device.
    let (code, after, err) = exec(
        &ward,
        &config,
        "pod",
        &[
            "sh",
            "-c",
            "ls /sys/bus/virtio/drivers/virtio_net | grep -c virtio",
        ],
    );
    assert_eq!(code, Some(0), "exec: {err}");
    assert_eq!(
        after.trim(),
        "1",
        "virtio-net devices left in the guest: {after}"
    );
    kill_and_delete(&ward, &config, "pod");
}

#[test]
fn builtin_carries_a_network_namespace_over_virtio_net() {
    require_hardware_kvm();
    let ward = Ward::new();
    require_vmm(&ward);
    let _network = TestNetwork::new();
    let config = ward.config_with("builtin.toml", "[hypervisor]\nbackend = \"builtin\"");
    let bundle = ward.bundle(
        "net",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo hello-over-virtio-net > /www/index.html && \
             exec httpd -f -p 80 -h /www",
        ],
    );
    configure(&bundle, NETNS, serde_json::json!({}));
    start_bundle(&ward, &config, "net", &bundle);

    let started = Instant::now();
    let answer = ward_e2e::http_get("10.99.0.2:80".parse().unwrap(), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("GET http://10.99.0.2/ from L1: {e}"));
    eprintln!("first answer over virtio-net after {:?}", started.elapsed());
    assert!(answer.contains("hello-over-virtio-net"), "{answer}");

    let (code, guest, err) = exec(
        &ward,
        &config,
        "net",
        &[
            "sh",
            "-c",
            "cat /sys/class/net/eth0/address /sys/class/net/eth0/mtu",
        ],
    );
    assert_eq!(code, Some(0), "exec: {err}");
    let mac = std::fs::read_to_string("/sys/class/net/wkvm0/address").unwrap();
    // The guest's NIC has the namespace's veth's MAC (not our end's) and MTU.
    let veth_mac = Command::new("ip")
        .args(["-n", NETNS, "-o", "link", "show", "eth0"])
        .output()
        .expect("ip link");
    let veth_mac = text(&veth_mac.stdout);
    let guest_mac = guest.lines().next().unwrap_or_default();
    assert!(
        veth_mac.contains(guest_mac),
        "guest {guest_mac} vs veth {veth_mac}"
    );
    assert_ne!(guest_mac, mac.trim());
    assert_eq!(guest.lines().nth(1), Some("1400"), "{guest}");
    kill_and_delete(&ward, &config, "net");
}
