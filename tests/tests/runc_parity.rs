//! Where engines and scripts rely on runc's exact behaviour: `spec` writes runc's template,
//! and that template runs under ward as it does under runc.

use std::path::Path;
use std::process::Command;

use ward_e2e::{text, which, Ward};

fn need_runc() {
    assert!(
        which("runc"),
        "end-to-end test prerequisite missing: runc (apt-get install runc, or `make test`)"
    );
}

/// `TOOL spec [extra]` in a fresh directory, parsed.
fn spec_of(tool: &mut Command, dir: &Path, extra: &[&str]) -> serde_json::Value {
    std::fs::create_dir_all(dir).unwrap();
    let out = tool
        .arg("spec")
        .args(extra)
        .arg("--bundle")
        .arg(dir)
        .output()
        .expect("running spec");
    assert!(
        out.status.success(),
        "{:?} spec: {}",
        tool.get_program(),
        text(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).expect("JSON")
}

#[test]
fn spec_is_runcs_field_for_field() {
    need_runc();
    let ward = Ward::new();
    for extra in [&[][..], &["--rootless"][..]] {
        let name = if extra.is_empty() { "root" } else { "rootless" };
        let ours = spec_of(
            &mut ward.command(),
            &ward.dir.path().join(format!("ward-{name}")),
            extra,
        );
        let runcs = spec_of(
            &mut Command::new("runc"),
            &ward.dir.path().join(format!("runc-{name}")),
            extra,
        );
        assert_eq!(
            ours,
            runcs,
            "ward spec {extra:?} differs from runc's:\nward: {}\nrunc: {}",
            serde_json::to_string_pretty(&ours).unwrap(),
            serde_json::to_string_pretty(&runcs).unwrap()
        );
    }
}

/// The capability lines of /proc/self/status.
fn cap_lines(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .map(str::to_string)
        .collect()
}

#[test]
fn runcs_default_spec_runs_with_runcs_capabilities() {
    need_runc();
    let ward = Ward::new();
    // A busybox root filesystem under runc's own template, edited as scripts do: no
    // terminal, a command instead of a shell.
    let bundle = ward.bundle("runc-default", &["true"]);
    std::fs::remove_file(bundle.join("config.json")).unwrap();
    let mut spec = spec_of(&mut Command::new("runc"), &bundle, &[]);
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["cat", "/proc/self/status"]);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();

    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), "runc-default"]);
    assert!(
        out.status.success(),
        "ward run of runc's default spec: {}",
        text(&out.stderr)
    );
    let under_ward = cap_lines(&text(&out.stdout));

    let runc_root = ward.dir.path().join("runc-root");
    let out = Command::new("runc")
        .arg("--root")
        .arg(&runc_root)
        .args(["run", "--bundle", bundle.to_str().unwrap(), "ward-parity"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running runc");
    assert!(
        out.status.success(),
        "runc run of its default spec: {}",
        text(&out.stderr)
    );
    let under_runc = cap_lines(&text(&out.stdout));
    assert_eq!(under_ward.len(), 5, "{under_ward:?}");
    assert_eq!(under_ward, under_runc, "capabilities differ from runc's");
    // Ambient capabilities need to be inheritable too: runc's template grants none.
    assert!(
        under_ward.contains(&"CapAmb:\t0000000000000000".to_string()),
        "{under_ward:?}"
    );
}

#[test]
fn a_namespace_path_of_another_type_is_refused_as_runc_does() {
    need_runc();
    let ward = Ward::new();
    let bundle = ward.bundle("wrong-ns", &["true"]);
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    // This test's own IPC namespace, named as a network namespace.
    let ipc = format!("/proc/{}/ns/ipc", std::process::id());
    for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = ipc.clone().into();
        }
    }
    std::fs::write(&config, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let out = ward.run(&["create", "--bundle", bundle.to_str().unwrap(), "wrong-ns"]);
    ward_e2e::assert_fails_with(
        &out,
        &format!("network namespace path \"{ipc}\" is a namespace of type ipc, not network"),
    );
    assert_eq!(
        text(&ward.run(&["list", "-q"]).stdout),
        "",
        "nothing is left"
    );
    assert!(
        !ward.root.join("wrong-ns").exists(),
        "no state directory is left"
    );

    let out = Command::new("runc")
        .arg("--root")
        .arg(ward.dir.path().join("runc-root"))
        .args(["run", "--bundle", bundle.to_str().unwrap(), "wrong-ns"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running runc");
    assert!(
        !out.status.success(),
        "runc refuses it too; it printed {}",
        text(&out.stdout)
    );
}

/// JSON type names, to compare shapes.
fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[test]
fn features_have_runcs_shape_and_say_what_ward_does() {
    need_runc();
    let ward = Ward::new();
    let out = ward.run(&["features"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ours: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let out = Command::new("runc")
        .arg("features")
        .output()
        .expect("runc features");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runcs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");

    // Every field runc reports, ward reports too, with the same type.
    for (ours, runcs, at) in [
        (&ours, &runcs, "top level"),
        (&ours["linux"], &runcs["linux"], "linux"),
        (
            &ours["linux"]["cgroup"],
            &runcs["linux"]["cgroup"],
            "linux.cgroup",
        ),
    ] {
        for (key, value) in runcs.as_object().unwrap() {
            let mine = ours
                .get(key)
                .unwrap_or_else(|| panic!("{at}: ward features lacks {key}"));
            assert_eq!(kind(mine), kind(value), "{at}.{key}");
        }
    }
    serde_json::from_value::<oci_spec::runtime::Features>(ours.clone()).expect("OCI features");

    // What ward runs: every hook stage (tests/tests/hooks.rs runs each), the propagation
    // options (tests/tests/spec_fields.rs), the namespaces the guest makes, seccomp
    // (tests/tests/seccomp.rs) with runc's actions but SCMP_ACT_NOTIFY; not AppArmor or
    // SELinux, which the guest does not apply.
    assert_eq!(ours["hooks"], runcs["hooks"], "the same six stages as runc");
    let options: Vec<&str> = ours["mountOptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.as_str())
        .collect();
    for option in [
        "shared",
        "rshared",
        "slave",
        "rslave",
        "private",
        "rprivate",
        "unbindable",
        "runbindable",
        "bind",
        "rbind",
        "ro",
        "nosuid",
        "nodev",
        "noexec",
    ] {
        assert!(options.contains(&option), "{option}");
    }
    assert!(!options.contains(&"tmpcopyup"), "ward does not copy up");
    assert_eq!(ours["linux"]["namespaces"], runcs["linux"]["namespaces"]);
    assert_eq!(ours["linux"]["seccomp"]["enabled"], true);
    assert_eq!(
        ours["linux"]["seccomp"]["operators"],
        runcs["linux"]["seccomp"]["operators"]
    );
    for action in runcs["linux"]["seccomp"]["actions"].as_array().unwrap() {
        let ours = ours["linux"]["seccomp"]["actions"].as_array().unwrap();
        assert_eq!(
            ours.contains(action),
            action != "SCMP_ACT_NOTIFY",
            "seccomp action {action}"
        );
    }
    for arch in runcs["linux"]["seccomp"]["archs"].as_array().unwrap() {
        let ours = ours["linux"]["seccomp"]["archs"].as_array().unwrap();
        assert!(ours.contains(arch), "seccomp architecture {arch}");
    }
    for lsm in ["apparmor", "selinux"] {
        assert_eq!(ours["linux"][lsm]["enabled"], false, "{lsm}");
    }
}

/// Receives the terminal master that `create --console-socket` sends.
fn receive_master(listener: &std::os::unix::net::UnixListener) -> std::fs::File {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let (stream, _) = listener
        .accept()
        .expect("ward connects to the console socket");
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("recvmsg on the console socket");
    for cmsg in msg.cmsgs().expect("control messages") {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: SCM_RIGHTS gave this process a new descriptor that nothing else owns.
            return unsafe { std::fs::File::from_raw_fd(fds[0]) };
        }
    }
    panic!("no descriptor came over the console socket");
}

#[test]
fn a_bundle_from_spec_runs_with_a_console_socket() {
    // What tools and test suites do: `RUNTIME spec`, edit the args, create with a console
    // socket (runc's template has a terminal), start, read the terminal.
    let ward = Ward::new();
    let bundle = ward.bundle("from-spec", &["true"]);
    std::fs::remove_file(bundle.join("config.json")).unwrap();
    let mut spec = spec_of(&mut ward.command(), &bundle, &[]);
    spec["process"]["args"] = serde_json::json!(["sh", "-c", "tty; echo hello over the console"]);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
    let socket = ward.dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || receive_master(&listener));
    let out = ward.run_detached(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--console-socket",
        socket.to_str().unwrap(),
        "from-spec",
    ]);
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    let master = receiver.join().expect("the console socket's receiver");
    let out = ward.run(&["start", "from-spec"]);
    assert!(out.status.success(), "start: {}", text(&out.stderr));

    // Read until the greeting (or the terminal closes when the process exits).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut master = master;
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("hello over the console") {
                break;
            }
        }
        let _ = tx.send(seen);
    });
    let seen = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the terminal's output within 60 s");
    let shown = text(&seen);
    assert!(
        shown.contains("/dev/pts/"),
        "the process has a terminal: {shown:?}"
    );
    assert!(shown.contains("hello over the console"), "{shown:?}");
    ward.wait_status("from-spec", "stopped", std::time::Duration::from_secs(60));
    let out = ward.run(&["delete", "from-spec"]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
}

#[test]
fn runcs_rootless_template_runs() {
    // A user namespace mapping root to the caller, the guest's /sys bound in, and a
    // cgroup2 mount the namespace may not make (the container's cgroup is bound instead).
    let ward = Ward::new();
    let bundle = ward.bundle("rootless", &["true"]);
    std::fs::remove_file(bundle.join("config.json")).unwrap();
    let mut spec = spec_of(&mut ward.command(), &bundle, &["--rootless"]);
    spec["process"]["terminal"] = false.into();
    // The template shares the host's network (it has no network namespace), which a VM
    // cannot (tests/tests/network.rs checks the refusal); the rest is what this test is
    // about.
    spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("the template's namespaces")
        .push(serde_json::json!({"type": "network"}));
    spec["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "cat /proc/self/uid_map; ls /sys/fs/cgroup/cgroup.procs; ls /sys/class > /dev/null && echo sysfs ok"
    ]);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), "rootless"]);
    let shown = text(&out.stdout);
    assert!(
        out.status.success(),
        "ward run of the rootless template: {}\n{shown}",
        text(&out.stderr)
    );
    let map: Vec<&str> = shown
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(map, ["0", "0", "1"], "{shown}");
    assert!(shown.contains("/sys/fs/cgroup/cgroup.procs"), "{shown}");
    assert!(shown.contains("sysfs ok"), "{shown}");
}
