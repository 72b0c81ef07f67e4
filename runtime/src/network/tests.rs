//! Against the kernel (root, /dev/net/tun): a private "pod" namespace holding one end of
//! a veth, the other end in a private "outside" namespace standing for the engine's
//! bridge. Nothing on the host's own network is touched: both namespaces belong to
//! threads of this test and vanish with them.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use futures_util::stream::TryStreamExt;

use super::*;

const ETHERTYPE_TEST: u16 = 0x88b5; // IEEE local experimental
const VNET_HDR_LEN: usize = 10;

/// A network namespace of its own, alive until dropped.
struct PrivateNetns {
    path: PathBuf,
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PrivateNetns {
    fn new() -> PrivateNetns {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the network tests need root (they make network namespaces, veths and taps)"
        );
        assert!(
            Path::new("/dev/net/tun").exists(),
            "the network tests need /dev/net/tun (modprobe tun)"
        );
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let result = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map(|()| {
                format!(
                    "/proc/{}/task/{}/ns/net",
                    std::process::id(),
                    nix::unistd::gettid()
                )
            });
            ready_tx.send(result).unwrap();
            let _ = stop_rx.recv();
        });
        let path = ready_rx.recv().unwrap().expect("unshare(CLONE_NEWNET)");
        PrivateNetns {
            path: PathBuf::from(path),
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PrivateNetns {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn nl(path: &Path, what: &str) -> impl FnOnce(rtnetlink::Error) -> NetworkError + use<> {
    netns::failed(path, what.to_string())
}

/// pod: veth0 10.77.0.2/24, default via 10.77.0.1; outside: peer0, up.
fn setup(pod: &PrivateNetns, outside: &PrivateNetns) {
    let outside_file = std::fs::File::open(&outside.path).unwrap();
    let path = pod.path.clone();
    netns::within(&pod.path, "test setup", move |handle| async move {
        handle
            .link()
            .add(rtnetlink::LinkVeth::new("veth0", "peer0").build())
            .execute()
            .await
            .map_err(nl(&path, "veth"))?;
        let index = |name: &'static str| {
            let handle = handle.clone();
            let path = path.clone();
            async move {
                Ok::<u32, NetworkError>(
                    handle
                        .link()
                        .get()
                        .match_name(name.to_string())
                        .execute()
                        .try_next()
                        .await
                        .map_err(nl(&path, name))?
                        .expect("link")
                        .header
                        .index,
                )
            }
        };
        let peer = index("peer0").await?;
        handle
            .link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(peer)
                    .setns_by_fd(outside_file.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(&path, "moving peer0"))?;
        let veth = index("veth0").await?;
        handle
            .link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(veth)
                    .mtu(1400)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(&path, "veth0 up"))?;
        handle
            .address()
            .add(veth, IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)), 24)
            .execute()
            .await
            .map_err(nl(&path, "address"))?;
        handle
            .route()
            .add(
                rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(Ipv4Addr::new(10, 77, 0, 1))
                    .build(),
            )
            .execute()
            .await
            .map_err(nl(&path, "default route"))?;
        Ok(())
    })
    .expect("pod namespace setup");
    let path = outside.path.clone();
    netns::within(&outside.path, "test setup", move |handle| async move {
        let peer = handle
            .link()
            .get()
            .match_name("peer0".to_string())
            .execute()
            .try_next()
            .await
            .map_err(nl(&path, "peer0"))?
            .expect("peer0")
            .header
            .index;
        handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(peer).up().build())
            .execute()
            .await
            .map_err(nl(&path, "peer0 up"))
    })
    .expect("outside namespace setup");
}

/// An AF_PACKET socket on `ifname` of the calling thread's namespace, for the test
/// ethertype, with a receive timeout.
fn packet_socket(ifname: &str) -> OwnedFd {
    // SAFETY: socket() takes no pointers; checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETHERTYPE_TEST.to_be()),
        )
    };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a socket we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(index > 0, "no interface {ifname}");
    // SAFETY: sockaddr_ll is plain old data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETHERTYPE_TEST.to_be();
    addr.sll_ifindex = index as i32;
    // SAFETY: addr is a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let timeout = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: timeout is a valid timeval of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &timeout as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    fd
}

fn frame(src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE_TEST.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(60), 0);
    f
}

/// Reads one frame of the test's ethertype from `fd` (skipping others), within 5 s.
fn read_test_frame(fd: &OwnedFd, skip: usize) -> Vec<u8> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no frame arrived within 5 s"
        );
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 500) } <= 0 {
            continue;
        }
        let mut buf = vec![0u8; 2048];
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n > 0, "read: {}", std::io::Error::last_os_error());
        let frame = &buf[skip..n as usize];
        if frame.len() >= 14 && frame[12..14] == ETHERTYPE_TEST.to_be_bytes() {
            return frame.to_vec();
        }
    }
}

#[test]
fn the_pod_namespace_reaches_the_tap_and_back() {
    let pod = PrivateNetns::new();
    let outside = PrivateNetns::new();
    setup(&pod, &outside);

    let carried = carry(&pod.path).expect("carrying the pod's network");
    assert_eq!(carried.taps.len(), 1, "{carried:?}");
    let tap = &carried.taps[0];
    assert_eq!(tap.name, "tap0_ward");
    assert_eq!(tap.carries.name, "veth0");
    assert_eq!(tap.carries.mtu, 1400);
    assert_eq!(
        tap.carries.addresses,
        vec![IpNet {
            ip: IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)),
            prefix: 24
        }]
    );
    assert_eq!(
        carried.routes,
        vec![Route {
            destination: None,
            gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1))),
            device: "veth0".into(),
            source: None,
        }]
    );

    // outside → veth0 → tap: what the bridge sends reaches the guest's side.
    let veth_mac = tap.carries.mac;
    let sent = frame([2, 0, 0, 0, 0, 1], b"to the guest");
    netns::within(&outside.path, "sending", move |_| async move {
        let sock = packet_socket("peer0");
        // SAFETY: the frame is readable for its length.
        let n = unsafe { libc::write(sock.as_raw_fd(), sent.as_ptr().cast(), sent.len()) };
        assert_eq!(
            n as usize,
            sent.len(),
            "{}",
            std::io::Error::last_os_error()
        );
        Ok(())
    })
    .unwrap();
    let got = read_test_frame(&tap.fd, VNET_HDR_LEN);
    assert_eq!(&got[14..26], b"to the guest");

    // tap → veth0 → outside: what the guest sends leaves through the veth.
    let mut out = vec![0u8; VNET_HDR_LEN];
    out.extend(frame(veth_mac, b"from the guest"));
    let tap_fd = tap.fd.as_raw_fd();
    let received = netns::within(&outside.path, "receiving", move |_| async move {
        let sock = packet_socket("peer0");
        // SAFETY: the buffer is readable for its length; tap_fd stays open (the test
        // holds `carried`).
        let n = unsafe { libc::write(tap_fd, out.as_ptr().cast(), out.len()) };
        assert_eq!(n as usize, out.len(), "{}", std::io::Error::last_os_error());
        Ok(read_test_frame(&sock, 0))
    })
    .unwrap();
    assert_eq!(&received[6..12], &veth_mac);
    assert_eq!(&received[14..28], b"from the guest");

    // Teardown gives veth0 its ingress back.
    let record = carried.record();
    drop(carried);
    release(&record).expect("release");
    let path = pod.path.clone();
    let qdiscs = netns::within(&pod.path, "listing qdiscs", move |handle| async move {
        handle
            .qdisc()
            .get()
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(nl(&path, "qdiscs"))
    })
    .unwrap();
    assert!(
        !qdiscs.iter().any(|q| q.attributes.iter().any(
            |a| matches!(a, netlink_packet_route::tc::TcAttribute::Kind(k) if k == "ingress")
        )),
        "an ingress qdisc is left: {qdiscs:?}"
    );
    // A namespace that is gone leaves nothing to release.
    let gone = NetworkRecord {
        netns: PathBuf::from("/proc/self/task/0/ns/net-gone"),
        interfaces: vec!["veth0".into()],
    };
    release(&gone).expect("nothing to release");
}

#[test]
fn only_loopback_carries_nothing() {
    let pod = PrivateNetns::new();
    let carried = carry(&pod.path).expect("carry");
    assert!(
        carried.taps.is_empty() && carried.routes.is_empty(),
        "{carried:?}"
    );
}

/// Two interfaces in one namespace: a tap and a redirect each, in the interfaces' order.
#[test]
fn every_interface_gets_its_tap() {
    let pod = PrivateNetns::new();
    let path = pod.path.clone();
    netns::within(&pod.path, "test setup", move |handle| async move {
        for (name, peer) in [("eth0", "p0"), ("eth1", "p1")] {
            handle
                .link()
                .add(rtnetlink::LinkVeth::new(name, peer).build())
                .execute()
                .await
                .map_err(nl(&path, name))?;
        }
        Ok(())
    })
    .expect("setup");
    let carried = carry(&pod.path).expect("carry");
    // Both ends of both veths are in the namespace: four interfaces, four taps.
    let names: Vec<(&str, &str)> = carried
        .taps
        .iter()
        .map(|t| (t.name.as_str(), t.carries.name.as_str()))
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for (n, (tap, _)) in names.iter().enumerate() {
        assert_eq!(*tap, format!("tap{n}_ward"));
    }
    for wanted in ["eth0", "eth1", "p0", "p1"] {
        assert!(names.iter().any(|(_, i)| *i == wanted), "{names:?}");
    }
    let record = carried.record();
    drop(carried);
    release(&record).expect("release");
}

/// More interfaces than a VM takes is a clear error, and leaves nothing behind.
#[test]
fn too_many_interfaces_are_refused() {
    let pod = PrivateNetns::new();
    let path = pod.path.clone();
    netns::within(&pod.path, "test setup", move |handle| async move {
        for n in 0..3 {
            handle
                .link()
                .add(rtnetlink::LinkVeth::new(&format!("a{n}"), &format!("b{n}")).build())
                .execute()
                .await
                .map_err(nl(&path, "veth"))?;
        }
        Ok(())
    })
    .expect("setup");
    let err = carry(&pod.path).unwrap_err().to_string();
    assert!(
        err.contains("has 6 interfaces to carry; ward carries at most 4"),
        "{err}"
    );
}
