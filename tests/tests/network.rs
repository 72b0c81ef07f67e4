//! The pod's network reaches the VM (issue 13): podman gives a container a network
//! namespace with a veth on its bridge (CNI here) and maps ports on the host; ward carries
//! that namespace into the guest (a tap beside the veth, tc redirecting between them, the
//! veth's MAC, MTU, addresses and routes on the guest's NIC).
//!
//! Traffic goes only to loopback, to podman's bridge and to the containers on it; every
//! wait is bounded.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use ward_e2e::engines::{Docker, DockerNetwork, Podman, IMAGE};
use ward_e2e::{text, Ward};

fn setup() -> (Ward, Podman) {
    let ward = Ward::new();
    let podman = Podman::with_ward(&ward);
    (ward, podman)
}

/// A container name unique to this test process.
fn name(base: &str) -> String {
    format!("wn{}-{base}", std::process::id())
}

/// Removes the container when the test ends, whatever happened.
struct Removed<'a>(&'a Podman, String);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", "--force", "--time", "0", &self.1]);
    }
}

/// A busybox httpd serving `body` on port 80 of the container.
fn httpd(body: &str) -> String {
    format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www")
}

#[test]
fn a_published_port_reaches_a_server_in_the_vm() {
    let (_ward, podman) = setup();
    let c = name("httpd");
    let _rm = Removed(&podman, c.clone());
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &c,
        "-p",
        "18080:80",
        IMAGE,
        "sh",
        "-c",
        &httpd("hello-from-the-vm"),
    ]);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 18080));
    let response = ward_e2e::http_get(addr, Duration::from_secs(30)).unwrap_or_else(|e| {
        panic!(
            "GET http://{addr}/ failed: {e}; the container's log: {}",
            text(&podman.run(&["logs", &c]).stderr)
        )
    });
    assert!(response.contains("200 OK"), "{response}");
    assert!(response.contains("hello-from-the-vm"), "{response}");

    // The guest's NIC is the veth's: same MAC and address as podman recorded.
    let mac = podman.inspect(&c, "{{.NetworkSettings.MacAddress}}");
    let ip = podman.inspect(&c, "{{.NetworkSettings.IPAddress}}");
    let guest = podman.ok(&[
        "exec",
        &c,
        "sh",
        "-c",
        "cat /sys/class/net/eth0/address; cat /proc/net/fib_trie",
    ]);
    assert!(
        guest.starts_with(&mac),
        "guest eth0 has not the veth's MAC {mac}: {guest}"
    );
    assert!(
        guest.contains(&ip),
        "guest has not the address {ip}: {guest}"
    );
}

#[test]
fn the_container_reaches_the_host_bridge_and_has_the_engines_resolv_conf() {
    let (_ward, podman) = setup();
    let c = name("client");
    let _rm = Removed(&podman, c.clone());
    podman.ok(&["run", "-d", "--name", &c, IMAGE, "sleep", "100000"]);
    let gateway: Ipv4Addr = podman
        .inspect(&c, "{{.NetworkSettings.Gateway}}")
        .parse()
        .expect("podman's bridge address");

    // A server on the bridge's host address, answering one connection.
    let listener = TcpListener::bind((gateway, 0)).expect("listening on the bridge address");
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let (mut conn, peer) = listener.accept().expect("accept");
        conn.write_all(b"hello-from-the-host\n").unwrap();
        peer
    });
    let out = podman.run(&[
        "exec",
        &c,
        "sh",
        "-c",
        &format!("nc -w 10 {gateway} {port} </dev/null"),
    ]);
    assert_eq!(
        text(&out.stdout),
        "hello-from-the-host\n",
        "stderr: {}",
        text(&out.stderr)
    );
    let peer = server.join().expect("the server thread");
    let ip = podman.inspect(&c, "{{.NetworkSettings.IPAddress}}");
    assert_eq!(
        peer.ip().to_string(),
        ip,
        "the connection came from the container"
    );

    let engines = std::fs::read_to_string(podman.inspect(&c, "{{.ResolvConfPath}}"))
        .expect("podman's resolv.conf");
    let guest = podman.ok(&["exec", &c, "cat", "/etc/resolv.conf"]);
    assert_eq!(guest.trim(), engines.trim());
    let hosts = podman.ok(&["exec", &c, "cat", "/etc/hosts"]);
    assert!(
        hosts.contains(&ip),
        "/etc/hosts names the container: {hosts}"
    );
    assert_eq!(
        podman.ok(&["exec", &c, "hostname"]),
        podman.inspect(&c, "{{.Config.Hostname}}")
    );
}

#[test]
fn network_none_has_only_loopback() {
    let (_ward, podman) = setup();
    let out = podman.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "ls",
        "/sys/class/net",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["lo"]
    );
}

#[test]
fn host_networking_is_refused_with_a_clear_error() {
    let (_ward, podman) = setup();
    let out = podman.run(&["run", "--rm", "--network", "host", IMAGE, "true"]);
    assert!(!out.status.success(), "--network host ran");
    assert!(
        text(&out.stderr).contains("host networking cannot be carried into a VM"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn two_containers_on_the_bridge_talk_to_each_other() {
    let (_ward, podman) = setup();
    let server = name("srv");
    let _rm_server = Removed(&podman, server.clone());
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &server,
        IMAGE,
        "sh",
        "-c",
        &httpd("vm-to-vm"),
    ]);
    let ip = podman.inspect(&server, "{{.NetworkSettings.IPAddress}}");
    let out = podman.run(&[
        "run",
        "--rm",
        IMAGE,
        "sh",
        "-c",
        &format!(
            // nc, not wget: the image's static busybox crashes resolving names in wget.
            "i=0; while test $i -lt 30; do \
             echo -e 'GET / HTTP/1.0\\r\\n\\r' | nc -w 5 {ip} 80 | grep vm-to-vm && exit 0; \
             sleep 1; i=$((i+1)); done; exit 1"
        ),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "vm-to-vm");
}

/// A container asking for a new network namespace (no path) gets one on the host too:
/// its relay, the PID engines see and hand to prestart hooks (docker's libnetwork
/// configures /proc/PID/ns/net), is not in the host's namespace.
#[test]
fn a_new_network_namespace_is_new_on_the_host_too() {
    let ward = Ward::new();
    ward.start("ownnet", &["sleep", "100000"]);
    let pid = ward.state("ownnet")["pid"].as_i64().expect("a pid");
    let relay = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("the relay's netns");
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(relay, ours, "the relay shares the host's network namespace");
    let out = ward.run(&["delete", "--force", "ownnet"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The runc CLI refuses a spec without a network namespace the same way.
#[test]
fn a_spec_without_a_network_namespace_is_refused() {
    let ward = Ward::new();
    let bundle = ward.bundle("hostnet", &["true"]);
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|ns| ns["type"] != "network");
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), "hostnet"]);
    ward_e2e::assert_fails_with(
        &out,
        "ward: container \"hostnet\": host networking cannot be carried into a VM",
    );
    assert!(
        !ward.root.join("hostnet").exists(),
        "the refused container left state"
    );
}

/// Removes a podman network when the test ends.
struct RemovedNetwork<'a>(&'a Podman, String);

impl Drop for RemovedNetwork<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["network", "rm", "--force", &self.1]);
    }
}

/// A container on two networks: two interfaces in its namespace, two NICs in the guest,
/// each with its own address, and the second network's gateway reached through the
/// second NIC.
#[test]
fn two_networks_give_the_guest_two_nics() {
    let (_ward, podman) = setup();
    let net = name("second");
    podman.ok(&["network", "create", "--subnet", "10.89.77.0/24", &net]);
    let _rm_net = RemovedNetwork(&podman, net.clone());
    let c = name("twonics");
    let _rm = Removed(&podman, c.clone());
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &c,
        "--network",
        &format!("podman,{net}"),
        IMAGE,
        "sleep",
        "100000",
    ]);
    let guest = podman.ok(&[
        "exec",
        &c,
        "sh",
        "-c",
        "ls /sys/class/net; cat /proc/net/fib_trie",
    ]);
    let names: Vec<&str> = guest
        .lines()
        .take_while(|l| !l.starts_with("Main"))
        .collect();
    assert_eq!(names, ["eth0", "eth1", "lo"], "{guest}");
    assert!(
        guest.contains("10.89.77."),
        "no address on the second network: {guest}"
    );
    let first = podman.inspect(&c, "{{.NetworkSettings.Networks.podman.IPAddress}}");
    assert!(
        guest.contains(&first),
        "no address {first} on the first network: {guest}"
    );

    // The second network's bridge address, served from the host.
    let gateway = Ipv4Addr::new(10, 89, 77, 1);
    let listener = TcpListener::bind((gateway, 0)).expect("listening on the second bridge");
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.write_all(b"second-network\n").unwrap();
    });
    let out = podman.run(&[
        "exec",
        &c,
        "sh",
        "-c",
        &format!("nc -w 10 {gateway} {port} </dev/null"),
    ]);
    assert_eq!(
        text(&out.stdout),
        "second-network\n",
        "{}",
        text(&out.stderr)
    );
    server.join().expect("the server thread");
}

/// Removes the pod when the test ends, whatever happened.
struct RemovedPod<'a>(&'a Podman, String);

impl Drop for RemovedPod<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .run(&["pod", "rm", "--force", "--time", "0", &self.1]);
    }
}

/// A pod that does not share its network (`--share ipc,uts`): each member brings a
/// namespace of its own, with its own veth on podman's bridge. ward hot-adds a NIC for it
/// into the pod's running VM and the agent gives the member a guest namespace of its own
/// holding it: the member has its veth's MAC and address (not the infra's), answers on
/// that address, and is in the pod's VM. A member that leaves takes its NIC with it.
#[test]
fn a_pod_member_brings_its_own_network() {
    let (_ward, podman) = setup();
    let pod = name("ownnet-pod");
    let _rm_pod = RemovedPod(&podman, pod.clone());
    podman.ok(&["pod", "create", "--share", "ipc,uts", "--name", &pod]);
    let member = name("ownnet-member");
    podman.ok(&[
        "run",
        "-d",
        "--pod",
        &pod,
        "--name",
        &member,
        IMAGE,
        "sh",
        "-c",
        &httpd("own-nic"),
    ]);
    let infra = podman.ok(&["pod", "inspect", "--format", "{{.InfraContainerID}}", &pod]);
    let infra_ip = podman.inspect(&infra, "{{.NetworkSettings.IPAddress}}");
    let ip = podman.inspect(&member, "{{.NetworkSettings.IPAddress}}");
    let mac = podman.inspect(&member, "{{.NetworkSettings.MacAddress}}");
    assert!(
        !ip.is_empty() && ip != infra_ip,
        "podman gave the member no address of its own: {ip:?} (infra {infra_ip:?})"
    );

    // Its GET answered from the host, on the member's own address.
    let addr = SocketAddr::new(ip.parse().expect("an IPv4 address"), 80);
    let response = ward_e2e::http_get(addr, Duration::from_secs(30)).unwrap_or_else(|e| {
        panic!(
            "GET http://{addr}/ failed: {e}; the member's log: {}",
            text(&podman.run(&["logs", &member]).stderr)
        )
    });
    assert!(response.contains("own-nic"), "{response}");

    // In the guest: its own NIC (the veth's MAC and address), and not the pod's.
    let view = |c: &str| {
        podman.ok(&[
            "exec",
            c,
            "sh",
            "-c",
            "cat /proc/sys/kernel/random/boot_id; ls /sys/class/net; \
             cat /sys/class/net/eth0/address; cat /proc/net/fib_trie",
        ])
    };
    let guest = view(&member);
    let lines: Vec<&str> = guest.lines().collect();
    assert_eq!(&lines[1..3], ["eth0", "lo"], "{guest}");
    assert_eq!(
        lines[3], mac,
        "the guest NIC has not the veth's MAC: {guest}"
    );
    assert!(
        guest.contains(&ip),
        "no {ip} in the member's namespace: {guest}"
    );
    assert!(
        !guest.contains(&infra_ip),
        "the member sees the infra container's address {infra_ip}: {guest}"
    );

    // A second member: the same VM, its own NIC; it leaves again (--rm), and the first
    // still answers.
    let second = name("ownnet-second");
    let out = podman.ok(&[
        "run",
        "--rm",
        "--pod",
        &pod,
        "--name",
        &second,
        IMAGE,
        "sh",
        "-c",
        "cat /proc/sys/kernel/random/boot_id; ls /sys/class/net; cat /proc/net/fib_trie",
    ]);
    assert_eq!(
        out.lines().next(),
        lines.first().copied(),
        "the second member is not in the pod's VM: {out}"
    );
    assert!(
        !out.contains(&ip),
        "the second member sees the first's address: {out}"
    );
    let response =
        ward_e2e::http_get(addr, Duration::from_secs(30)).expect("GET after the second left");
    assert!(response.contains("own-nic"), "{response}");
    // Its card left the VM: the infra's and the first member's remain.
    let cards = podman.ok(&[
        "exec",
        &member,
        "sh",
        "-c",
        "ls /sys/bus/virtio/drivers/virtio_net | grep -c virtio",
    ]);
    assert_eq!(
        cards.trim(),
        "2",
        "virtio-net devices in the guest: {cards}"
    );

    // Gone with the member: its NIC, its guest namespace, the host redirect.
    podman.ok(&["rm", "--force", "--time", "0", &member]);
    // podman passes no --root: ward keeps its state in its default one.
    let sandbox = ward_e2e::engines::sandbox_dir(std::path::Path::new("/run/ward"), &infra);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sandbox.join("sandbox.json")).expect("the pod's sandbox state"),
    )
    .expect("sandbox.json");
    assert_eq!(
        state["member_networks"],
        serde_json::json!({}),
        "members' networks left in the sandbox: {state}"
    );
}

/// docker's bridge (attached by libnetwork's prestart hook, which ward runs before the VM
/// boots on a namespace it then carries) and `-p` (docker's userland proxy; the test's
/// dockerd makes no iptables rule), like podman's.
#[test]
fn docker_publishes_a_port_like_podman() {
    let ward = Ward::new();
    let docker = Docker::with_ward_on(&ward, DockerNetwork::Bridge { subnet: 7 });
    let c = name("docker-httpd");
    docker.ok(&[
        "run",
        "-d",
        "--runtime",
        "ward",
        "--name",
        &c,
        "-p",
        "18095:80",
        IMAGE,
        "sh",
        "-c",
        &httpd("hello-from-docker"),
    ]);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 18095));
    let response = ward_e2e::http_get(addr, Duration::from_secs(30)).unwrap_or_else(|e| {
        panic!(
            "GET http://{addr}/ failed: {e}; dockerd's log: {}",
            docker.log()
        )
    });
    assert!(response.contains("hello-from-docker"), "{response}");
    let ip = docker.inspect(&c, "{{.NetworkSettings.IPAddress}}");
    assert!(ip.starts_with("10.124.7."), "docker's address: {ip}");
    let guest = docker.ok(&["exec", &c, "cat", "/proc/net/fib_trie"]);
    assert!(
        guest.contains(&ip),
        "the guest has not docker's address {ip}: {guest}"
    );
    docker.ok(&["rm", "--force", &c]);
}
