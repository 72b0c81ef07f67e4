//! Drives a booted guest's agent through vhost-device-vsock's Unix socket and checks the
//! main paths: Check, GetGuestDetails, a busybox container's output over a stdout stream,
//! exit codes, signals, exec, and error reporting.
//!
//! usage: vm_smoke UDS_PATH ROOTFS_TAG
//!
//! The guest must share a busybox rootfs under the 9p mount tag ROOTFS_TAG. Used by hand
//! (see the agent's report); the end-to-end tests of the runtime cover the same ground
//! through `ward`.

use std::io::{Read, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ward_agent_protocol::agent::*;
use ward_agent_protocol::agent_ttrpc::AgentClient;
use ward_agent_protocol::stream::{self, StreamHeader, StreamKind};
use ward_agent_protocol::{AGENT_VSOCK_PORT, STREAM_VSOCK_PORT};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// vhost-device-vsock's host-side handshake: "CONNECT <port>\n" → "OK <port>\n".
fn connect(uds: &str, port: u32) -> Result<UnixStream> {
    let mut conn = UnixStream::connect(uds)?;
    conn.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        if conn.read(&mut byte)? == 0 {
            return Err("vsock proxy closed the connection".into());
        }
        line.push(byte[0]);
    }
    if !line.starts_with(b"OK") {
        return Err(format!("vsock proxy: {}", String::from_utf8_lossy(&line)).into());
    }
    Ok(conn)
}

fn client(uds: &str) -> Result<AgentClient> {
    let conn = connect(uds, AGENT_VSOCK_PORT)?;
    Ok(AgentClient::new(ttrpc::Client::new(conn.into_raw_fd())?))
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

fn open_stream(uds: &str, id: &str, exec: &str, kind: StreamKind) -> Result<UnixStream> {
    let mut conn = connect(uds, STREAM_VSOCK_PORT)?;
    let header = StreamHeader {
        kind,
        container_id: id.into(),
        exec_id: exec.into(),
    };
    conn.write_all(header.encode().as_bytes())?;
    let reply = stream::read_line(&mut conn, 1024)?;
    stream::parse_reply(&reply)?;
    Ok(conn)
}

fn spec(args: &[&str]) -> Vec<u8> {
    let mut spec = oci_spec::runtime::Spec::default();
    let mut process = spec
        .process()
        .clone()
        .expect("the default spec has a process");
    process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
    spec.set_process(Some(process));
    serde_json::to_vec(&spec).expect("a spec serializes")
}

fn create(agent: &AgentClient, id: &str, tag: &str, args: &[&str]) -> ttrpc::Result<Empty> {
    create_with(agent, id, tag, spec(args))
}

fn create_with(
    agent: &AgentClient,
    id: &str,
    tag: &str,
    spec_json: Vec<u8>,
) -> ttrpc::Result<Empty> {
    let mut storage = Storage::new();
    storage.source = tag.into();
    storage.fstype = "9p".into();
    storage.options = vec![
        "trans=virtio".into(),
        "version=9p2000.L".into(),
        "msize=262144".into(),
    ];
    storage.mount_point = format!("/run/ward/containers/{id}/rootfs");
    let mut req = CreateContainerRequest::new();
    req.container_id = id.into();
    req.oci_spec_json = spec_json;
    req.storages = vec![storage];
    req.rootfs_guest_path = format!("/run/ward/containers/{id}/rootfs");
    agent.create_container(ctx(), &req)
}

fn start(agent: &AgentClient, id: &str) -> ttrpc::Result<Empty> {
    let mut req = StartContainerRequest::new();
    req.container_id = id.into();
    agent.start_container(ctx(), &req)
}

fn wait(agent: &AgentClient, id: &str, exec: &str) -> ttrpc::Result<WaitProcessResponse> {
    let mut req = WaitProcessRequest::new();
    req.container_id = id.into();
    req.exec_id = exec.into();
    agent.wait_process(ttrpc::context::Context::default(), &req)
}

fn signal(agent: &AgentClient, id: &str, exec: &str, sig: u32) -> ttrpc::Result<Empty> {
    let mut req = SignalProcessRequest::new();
    req.container_id = id.into();
    req.exec_id = exec.into();
    req.signal = sig;
    agent.signal_process(ctx(), &req)
}

fn remove(agent: &AgentClient, id: &str) -> ttrpc::Result<Empty> {
    let mut req = RemoveContainerRequest::new();
    req.container_id = id.into();
    agent.remove_container(ctx(), &req)
}

fn status_text(e: ttrpc::Error) -> String {
    match e {
        ttrpc::Error::RpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    }
}

/// Reads a stream to EOF on a thread.
fn collect(mut conn: UnixStream) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = conn.read_to_string(&mut out);
        out
    })
}

fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f();
    let ms = t.elapsed().as_millis();
    match &r {
        Ok(_) => println!("PASS {name} ({ms} ms)"),
        Err(e) => println!("FAIL {name} ({ms} ms): {e}"),
    }
    r
}

fn run(uds: &str, tag: &str) -> Result<()> {
    let agent = step("connect", || client(uds))?;
    step("Check", || {
        let r = agent.check(ctx(), &CheckRequest::new())?;
        println!(
            "     agent {} protocol {}",
            r.agent_version, r.protocol_version
        );
        Ok(())
    })?;
    step("GetGuestDetails", || {
        let d = agent.get_guest_details(ctx(), &GuestDetailsRequest::new())?;
        println!(
            "     kernel {} | {} | mem {} MiB total, {} MiB available | {} cpus",
            d.kernel_release,
            d.kernel_version,
            d.memory_total_bytes >> 20,
            d.memory_available_bytes >> 20,
            d.online_cpus
        );
        Ok(())
    })?;

    // echo hello, with its output over a stdout stream.
    step("echo hello over a stdout stream", || {
        create(&agent, "c1", tag, &["echo", "hello"])?;
        let stdout = collect(open_stream(uds, "c1", "", StreamKind::Stdout)?);
        let stderr = collect(open_stream(uds, "c1", "", StreamKind::Stderr)?);
        let stdin = open_stream(uds, "c1", "", StreamKind::Stdin)?;
        drop(stdin);
        start(&agent, "c1")?;
        let status = wait(&agent, "c1", "")?;
        let out = stdout.join().map_err(|_| "stdout thread")?;
        let err = stderr.join().map_err(|_| "stderr thread")?;
        if out != "hello\n" || status.status != 0 {
            return Err(format!("stdout {out:?} stderr {err:?} status {}", status.status).into());
        }
        match open_stream(uds, "c1", "", StreamKind::Stdout) {
            Err(e) if e.to_string().contains("already attached") => {}
            other => return Err(format!("second attach: {:?}", other.map(drop)).into()),
        }
        remove(&agent, "c1")?;
        Ok(())
    })?;

    // stdin through cat.
    step("stdin reaches cat, EOF ends it", || {
        create(&agent, "c1b", tag, &["cat"])?;
        let stdout = collect(open_stream(uds, "c1b", "", StreamKind::Stdout)?);
        let mut stdin = open_stream(uds, "c1b", "", StreamKind::Stdin)?;
        start(&agent, "c1b")?;
        stdin.write_all(b"through the pipe\n")?;
        stdin.shutdown(std::net::Shutdown::Write)?;
        let status = wait(&agent, "c1b", "")?;
        let out = stdout.join().map_err(|_| "stdout thread")?;
        if out != "through the pipe\n" || status.status != 0 {
            return Err(format!("stdout {out:?} status {}", status.status).into());
        }
        remove(&agent, "c1b")?;
        Ok(())
    })?;

    step("sh -c 'exit 3' gives status 3", || {
        create(&agent, "c2", tag, &["sh", "-c", "exit 3"])?;
        start(&agent, "c2")?;
        let status = wait(&agent, "c2", "")?;
        if status.status != 3 || status.signal != 0 {
            return Err(format!("status {} signal {}", status.status, status.signal).into());
        }
        remove(&agent, "c2")?;
        Ok(())
    })?;

    step(
        "sleep 1000 + exec cat /proc/version + SIGTERM gives 143",
        || {
            create(&agent, "c3", tag, &["sleep", "1000"])?;
            start(&agent, "c3")?;
            let mut req = ExecProcessRequest::new();
            req.container_id = "c3".into();
            req.exec_id = "e1".into();
            req.oci_process_json = serde_json::to_vec(&serde_json::json!({
                "args": ["cat", "/proc/version"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                "env": ["PATH=/bin"]
            }))?;
            agent.exec_process(ctx(), &req)?;
            let out = collect(open_stream(uds, "c3", "e1", StreamKind::Stdout)?);
            let status = wait(&agent, "c3", "e1")?;
            let out = out.join().map_err(|_| "stdout thread")?;
            println!("     exec output: {}", out.trim());
            if !out.starts_with("Linux version") || status.status != 0 {
                return Err(format!("exec output {out:?} status {}", status.status).into());
            }
            // id and hostname inside, through another exec.
            req.exec_id = "e2".into();
            req.oci_process_json = serde_json::to_vec(&serde_json::json!({
                "args": ["sh", "-c", "id; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /dev; cat /proc/self/cgroup"],
                "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]
            }))?;
            agent.exec_process(ctx(), &req)?;
            let out = collect(open_stream(uds, "c3", "e2", StreamKind::Stdout)?);
            let err = collect(open_stream(uds, "c3", "e2", StreamKind::Stderr)?);
            wait(&agent, "c3", "e2")?;
            for line in out.join().map_err(|_| "stdout")?.lines() {
                println!("     e2: {line}");
            }
            for line in err.join().map_err(|_| "stderr")?.lines() {
                println!("     e2 stderr: {line}");
            }
            signal(&agent, "c3", "", 15)?;
            let status = wait(&agent, "c3", "")?;
            if status.status != 143 || status.signal != 15 {
                return Err(format!("status {} signal {}", status.status, status.signal).into());
            }
            match signal(&agent, "c3", "", 15) {
                Err(e) => println!("     signal after exit: {}", status_text(e)),
                Ok(_) => return Err("signalling an exited process succeeded".into()),
            }
            remove(&agent, "c3")?;
            Ok(())
        },
    )?;

    step("exec failure is StartContainer's error", || {
        create(&agent, "c4", tag, &["nosuch"])?;
        match start(&agent, "c4") {
            Err(e) => {
                let text = status_text(e);
                println!("     {text}");
                if !text.contains("exec \"nosuch\": No such file or directory") {
                    return Err(text.into());
                }
            }
            Ok(_) => return Err("StartContainer succeeded".into()),
        }
        remove(&agent, "c4")?;
        Ok(())
    })?;

    step("errors carry codes", || {
        for (what, result) in [
            ("start unknown", start(&agent, "nope").map(drop)),
            ("wait unknown exec", {
                create(&agent, "c5", tag, &["true"])?;
                wait(&agent, "c5", "x").map(drop)
            }),
            (
                "create twice",
                create(&agent, "c5", tag, &["true"]).map(drop),
            ),
            ("bad id", create(&agent, "../x", tag, &["true"]).map(drop)),
            ("bad json", {
                let mut req = CreateContainerRequest::new();
                req.container_id = "c6".into();
                req.oci_spec_json = b"{\"process\": 7}".to_vec();
                req.rootfs_guest_path = "/run/ward/containers/c6/rootfs".into();
                agent.create_container(ctx(), &req).map(drop)
            }),
            ("remove unknown", remove(&agent, "nope").map(drop)),
        ] {
            match result {
                Err(e) => println!("     {what}: {}", status_text(e)),
                Ok(()) => return Err(format!("{what} succeeded").into()),
            }
        }
        remove(&agent, "c5")?;
        Ok(())
    })?;
    Ok(())
}

/// The spec tools/busybox-bundle writes (what the runtime's tests run), with `args`.
fn bundle_spec(args: &[&str]) -> serde_json::Value {
    let caps = [
        "CAP_AUDIT_WRITE",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_MKNOD",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SETFCAP",
        "CAP_SETGID",
        "CAP_SETPCAP",
        "CAP_SETUID",
        "CAP_SYS_CHROOT",
    ];
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false, "user": {"uid": 0, "gid": 0}, "args": args,
            "env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin", "TERM=xterm"], "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "bundle-host",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"]
        }
    })
}

/// Creates, starts, collects stdout+stderr and the status of a one-shot container.
fn run_one(
    uds: &str,
    agent: &AgentClient,
    id: &str,
    tag: &str,
    spec: &serde_json::Value,
) -> Result<(String, i32)> {
    create_with(agent, id, tag, serde_json::to_vec(spec)?)?;
    let out = collect(open_stream(uds, id, "", StreamKind::Stdout)?);
    let err = collect(open_stream(uds, id, "", StreamKind::Stderr)?);
    start(agent, id)?;
    let status = wait(agent, id, "")?;
    let mut text = out.join().map_err(|_| "stdout thread")?;
    text.push_str(&err.join().map_err(|_| "stderr thread")?);
    remove(agent, id)?;
    for line in text.lines() {
        println!("     {id}: {line}");
    }
    Ok((text, status.status))
}

fn expect(text: &str, needles: &[&str]) -> Result<()> {
    for needle in needles {
        if !text.contains(needle) {
            return Err(format!("output lacks {needle:?}").into());
        }
    }
    Ok(())
}

fn extended(uds: &str, tag: &str) -> Result<()> {
    let agent = client(uds)?;
    step(
        "busybox-bundle spec: caps, nnp, rlimits, masks, read-only paths",
        || {
            let spec = bundle_spec(&["sh", "-c",
            "id; hostname; echo HOME=$HOME; ulimit -n; grep -E '^(CapBnd|CapEff|NoNewPrivs)' /proc/self/status; \
             echo fw=$(ls /sys/firmware | wc -l) $(ls /proc/sys/../sys/firmware 2>/dev/null); echo x > /proc/sys/kernel/hostname; \
             mount | grep -E ' on /(sys|proc/sys|sys/fs/cgroup|dev) '; ls /sys/fs/cgroup | head -3"]);
            let (text, status) = run_one(uds, &agent, "b1", tag, &spec)?;
            expect(
                &text,
                &[
                    "uid=0(root)",
                    "bundle-host",
                    "HOME=/root",
                    "\n1024\n",
                    "NoNewPrivs:\t1",
                    "CapBnd:\t00000000a80425fb",
                    "fw=0",
                    "Read-only file system",
                    "cgroup2 on /sys/fs/cgroup type cgroup2 (ro",
                ],
            )?;
            if status != 0 {
                return Err(format!("status {status}").into());
            }
            Ok(())
        },
    )?;
    step("user namespace with ID maps", || {
        let mut spec = bundle_spec(&[
            "sh",
            "-c",
            "id; cat /proc/self/uid_map /proc/self/gid_map; ls -ln /bin/busybox",
        ]);
        spec["linux"]["namespaces"]
            .as_array_mut()
            .ok_or("ns")?
            .push(serde_json::json!({"type": "user"}));
        spec["linux"]["namespaces"]
            .as_array_mut()
            .ok_or("ns")?
            .push(serde_json::json!({"type": "cgroup"}));
        spec["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        spec["linux"]["gidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        let (text, status) = run_one(uds, &agent, "u1", tag, &spec)?;
        expect(&text, &["uid=0(root) gid=0(root)", "100000", "65534"])?;
        if status != 0 {
            return Err(format!("status {status}").into());
        }
        Ok(())
    })?;
    step(
        "cgroup limits, non-root user with ambient caps, read-only root",
        || {
            let mut spec = bundle_spec(&["sh", "-c",
            "id; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max; \
             grep -E '^Cap(Eff|Amb)' /proc/self/status; echo HOME=$HOME; pwd; touch /x"]);
            spec["process"]["user"] =
                serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [10]});
            spec["process"]["cwd"] = serde_json::json!("/home/app");
            let one = serde_json::json!(["CAP_NET_BIND_SERVICE"]);
            spec["process"]["capabilities"] = serde_json::json!({"bounding": one, "effective": one,
            "permitted": one, "inheritable": one, "ambient": one});
            spec["root"]["readonly"] = serde_json::json!(true);
            spec["linux"]["namespaces"]
                .as_array_mut()
                .ok_or("ns")?
                .push(serde_json::json!({"type": "cgroup"}));
            spec["linux"]["resources"] = serde_json::json!({"memory": {"limit": 67108864},
            "pids": {"limit": 20}, "cpu": {"quota": 50000, "period": 100000}});
            let (text, status) = run_one(uds, &agent, "r1", tag, &spec)?;
            expect(
                &text,
                &[
                    "uid=1000(app) gid=1000 groups=10",
                    "67108864\n20\n50000 100000",
                    "CapEff:\t0000000000000400",
                    "CapAmb:\t0000000000000400",
                    "Read-only file system",
                    "HOME=/home/app",
                    "/home/app",
                ],
            )?;
            if status == 0 {
                return Err("touch on a read-only root succeeded".into());
            }
            Ok(())
        },
    )?;
    step("outputs of 1 KB to 300 KB arrive whole", || {
        for n in [1000usize, 40_000, 70_000, 300_000] {
            create(
                &agent,
                "d1",
                tag,
                &["head", "-c", &n.to_string(), "/bin/busybox"],
            )?;
            let mut conn = open_stream(uds, "d1", "", StreamKind::Stdout)?;
            start(&agent, "d1")?;
            conn.set_read_timeout(Some(Duration::from_secs(20)))?;
            let mut got = Vec::new();
            let read = conn.read_to_end(&mut got);
            remove(&agent, "d1")?;
            if got.len() != n {
                return Err(format!("{n} bytes written, {} read ({read:?})", got.len()).into());
            }
        }
        Ok(())
    })?;
    step(
        "output written before the host attaches is all delivered",
        || {
            let size = std::fs::metadata("/tmp/wardvm/rootfs/bin/busybox")?.len() as usize;
            create(&agent, "o1", tag, &["cat", "/bin/busybox"])?;
            start(&agent, "o1")?;
            std::thread::sleep(Duration::from_millis(500)); // cat is blocked on a full pipe
            let mut conn = open_stream(uds, "o1", "", StreamKind::Stdout)?;
            conn.set_read_timeout(Some(Duration::from_secs(20)))?;
            let mut got = Vec::new();
            if let Err(e) = conn.read_to_end(&mut got) {
                return Err(format!("after {} bytes: {e}", got.len()).into());
            }
            let status = wait(&agent, "o1", "")?;
            println!(
                "     {} of {size} bytes, status {}",
                got.len(),
                status.status
            );
            remove(&agent, "o1")?;
            if got.len() != size || status.status != 0 {
                return Err("short output".into());
            }
            Ok(())
        },
    )?;
    step(
        "a blocked WaitProcess does not stop other calls; remove kills",
        || {
            create(&agent, "w1", tag, &["sleep", "1000"])?;
            start(&agent, "w1")?;
            let waiter = {
                let agent = client(uds)?;
                std::thread::spawn(move || wait(&agent, "w1", ""))
            };
            let waiter2 = {
                let agent = agent.clone();
                std::thread::spawn(move || wait(&agent, "w1", ""))
            };
            std::thread::sleep(Duration::from_millis(200));
            for _ in 0..5 {
                agent.check(ctx(), &CheckRequest::new())?;
            }
            signal(&agent, "w1", "", 0)?;
            remove(&agent, "w1")?;
            for w in [waiter, waiter2] {
                let status = w.join().map_err(|_| "waiter")??;
                println!(
                    "     waiter: status {} signal {}",
                    status.status, status.signal
                );
                if status.status != 137 {
                    return Err("expected SIGKILL".into());
                }
            }
            Ok(())
        },
    )?;
    step(
        "signal all reaches every process; a trapping init gets the real signal",
        || {
            let script = "trap 'echo got TERM; exit 7' TERM; sleep 1000 & sleep 1000 & wait; wait";
            create(&agent, "s1", tag, &["sh", "-c", script])?;
            let out = collect(open_stream(uds, "s1", "", StreamKind::Stdout)?);
            start(&agent, "s1")?;
            std::thread::sleep(Duration::from_millis(300));
            let mut req = SignalProcessRequest::new();
            req.container_id = "s1".into();
            req.signal = 15;
            req.all = true;
            agent.signal_process(ctx(), &req)?;
            let status = wait(&agent, "s1", "")?;
            let text = out.join().map_err(|_| "stdout")?;
            println!("     status {} output {:?}", status.status, text);
            remove(&agent, "s1")?;
            if status.status != 7 || text != "got TERM\n" {
                return Err("trap not run".into());
            }
            Ok(())
        },
    )?;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: vm_smoke UDS_PATH ROOTFS_TAG");
        std::process::exit(2);
    }
    let started = Instant::now();
    // Wait for the agent to come up (the guest may still be booting).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match client(&args[1]).and_then(|c| Ok(c.check(ctx(), &CheckRequest::new())?)) {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => {
                eprintln!("agent never answered: {e}");
                std::process::exit(1);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    println!(
        "agent answered {} ms after vm_smoke started",
        started.elapsed().as_millis()
    );
    match run(&args[1], &args[2]).and_then(|()| extended(&args[1], &args[2])) {
        Ok(()) => println!("ALL PASSED in {} ms", started.elapsed().as_millis()),
        Err(e) => {
            println!("FAILED: {e}");
            std::process::exit(1);
        }
    }
}
