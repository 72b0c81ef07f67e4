//! `add_net` and `remove_net` over the control socket of a running VM whose vCPU halts
//! (`cli; hlt`), with ward-vmm's seccomp filters on: the tap travels by SCM_RIGHTS to the
//! API thread, which hands it to the main thread, which sets it up under its filter. A call
//! a filter forbids ends this test binary (exit 159) with a line naming it. The guest never
//! ejects, so removal stays pending until the VM stops. Skipped without /dev/kvm or
//! /dev/net/tun; needs root (the taps live in a private network namespace).

use std::io::{self, BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use ward_vmm::config::DeviceConfig;
use ward_vmm::vmm::{Payload, Vmm, VmmConfig};
use ward_vmm::vstate::vcpu::ExitReason;

fn available(dev: &str) -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .is_ok()
}

/// `struct ifreq` with the flags in its union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    pad: [u8; 22],
}

/// A new tap `wtap%d` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) and its name.
fn tap() -> (OwnedFd, String) {
    const TUNSETIFF: u64 = 0x4004_54ca;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("/dev/net/tun");
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0x0002 | 0x1000 | 0x4000,
        pad: [0; 22],
    };
    req.name[..6].copy_from_slice(b"wtap%d");
    // SAFETY: TUNSETIFF reads and writes one struct ifreq; IfReq has its layout and size.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", io::Error::last_os_error());
    let end = req.name.iter().position(|&b| b == 0).expect("a name");
    let name = String::from_utf8(req.name[..end].to_vec()).expect("a name");
    (OwnedFd::from(file), name)
}

/// Whether interface `name` exists (a tap's goes when its last descriptor is closed).
fn exists(name: &str) -> bool {
    let c = std::ffi::CString::new(name).expect("a name");
    // SAFETY: a NUL-terminated string that lives across the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

struct Client(BufReader<UnixStream>, UnixStream);

impl Client {
    fn connect(path: &Path) -> Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = UnixStream::connect(path) {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return Client(BufReader::new(s.try_clone().unwrap()), s);
            }
            assert!(Instant::now() < deadline, "no API socket");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `req` as one line in one sendmsg, with `fd` attached if given.
    fn call(&mut self, req: Value, fd: Option<RawFd>) -> Value {
        let line = format!("{req}\n");
        let mut control = [0u64; 4];
        let mut iov = libc::iovec {
            iov_base: line.as_ptr() as *mut libc::c_void,
            iov_len: line.len(),
        };
        // SAFETY: all-zero is a valid msghdr; the fields used are set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            // SAFETY: `control` (32 bytes, aligned) holds one header and one descriptor
            // (CMSG_SPACE(4) is 24 on 64-bit Linux); CMSG_* only compute within it.
            unsafe {
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = libc::CMSG_SPACE(4) as _;
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
            }
        }
        // SAFETY: msg points at live buffers of the lengths given.
        let n = unsafe { libc::sendmsg(self.1.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        assert_eq!(n, line.len() as isize, "{}", io::Error::last_os_error());
        let mut reply = String::new();
        self.0.read_line(&mut reply).unwrap();
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"))
    }
}

#[test]
fn network_cards_are_hot_added_under_the_seccomp_filters() {
    if !available("/dev/kvm") || !available("/dev/net/tun") {
        eprintln!("skipped: no /dev/kvm or /dev/net/tun");
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare passes no memory; CLONE_NEWNET moves only this thread (and the
        // threads it starts).
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare: {} (run as root)",
            io::Error::last_os_error()
        );
        scenario();
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    // As ward-vmm's main does: every thread confines itself from here on.
    ward_vmm::seccomp::enable().expect("seccomp filters");
    let vmm = Vmm::new(
        VmmConfig {
            payload: Payload::Raw {
                code: vec![0xfa, 0xf4],
                addr: 0x1000,
            },
            vcpus: 1,
            max_vcpus: 1,
            memory_mib: 32,
            serial_log: dir.path().join("serial.log"),
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
    let add = json!({"op": "add_net", "id": "n1", "mac": "02:00:00:00:00:01", "mtu": 1500});

    let (t1, name1) = tap();
    assert_eq!(
        c.call(add.clone(), Some(t1.as_raw_fd())),
        json!({"ok": true})
    );
    drop(t1);
    assert!(exists(&name1), "ward-vmm holds its copy");
    let info = c.call(json!({"op": "info"}), None);
    assert_eq!(
        info["nets"],
        json!([{"id": "n1", "mac": "02:00:00:00:00:01", "mtu": 1500, "tap": name1,
                "state": "attached"}])
    );

    // Refused: the copy ward-vmm got is closed, and the interface goes with the last one.
    let (t2, name2) = tap();
    let r = c.call(add.clone(), Some(t2.as_raw_fd()));
    drop(t2);
    assert_eq!(r["ok"], false);
    assert!(
        r["error"].as_str().unwrap().contains("already attached"),
        "{r}"
    );
    assert!(!exists(&name2), "the refused tap was closed");
    let (t3, name3) = tap();
    let r = c.call(json!({"op": "ping"}), Some(t3.as_raw_fd()));
    drop(t3);
    assert_eq!(r["error"], "ping: takes no file descriptor");
    assert!(!exists(&name3));
    let r = c.call(add.clone(), None);
    assert_eq!(r["ok"], false, "add_net without a tap");
    // A descriptor that is no tap.
    // SAFETY: dup makes a new descriptor (of the client socket) that we own.
    let not_tap = unsafe { OwnedFd::from_raw_fd(libc::dup(c.1.as_raw_fd())) };
    let r = c.call(
        json!({"op": "add_net", "id": "n2", "mac": "02:00:00:00:00:02"}),
        Some(not_tap.as_raw_fd()),
    );
    assert!(r["error"].as_str().unwrap().contains("is not a tap"), "{r}");

    let r = c.call(json!({"op": "remove_net", "id": "n1"}), None);
    assert_eq!(r, json!({"ok": true, "pending": true}));
    assert_eq!(
        c.call(json!({"op": "info"}), None)["nets"][0]["state"],
        "removing"
    );
    assert_eq!(
        c.call(json!({"op": "remove_net", "id": "n1x"}), None)["ok"],
        false
    );

    let r = c.call(json!({"op": "shutdown", "grace_ms": 100}), None);
    assert_eq!(r["ok"], true);
    assert_eq!(runner.join().unwrap(), ExitReason::PowerOff);
    assert!(!exists(&name1), "the card went with the VM");
}
