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

/// The namespace and veth, removed when dropped.
struct TestNetwork;

impl TestNetwork {
    fn new() -> TestNetwork {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
        let _ = Command::new("ip").args(["link", "del", "wkvm0"]).output();
        sh(&format!(
            "ip netns add {NETNS} && ip link add wkvm0 type veth peer name eth0 netns {NETNS} && \
             ip addr add 10.99.0.1/24 dev wkvm0 && ip link set wkvm0 up && \
             ip -n {NETNS} link set eth0 mtu 1400 up && \
             ip -n {NETNS} addr add 10.99.0.2/24 dev eth0 && \
             ip -n {NETNS} route add default via 10.99.0.1"
        ));
        TestNetwork
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
        let _ = Command::new("ip").args(["link", "del", "wkvm0"]).output();
    }
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
    let spec_path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
    for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = format!("/run/netns/{NETNS}").into();
        }
    }
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
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
