//! Fields of the spec made true in the guest as runc makes them on the host: device nodes
//! and device rules, mount propagation (per mount and of the root), sysctls, oom_score_adj, rlimits, and
//! annotations ward does not know.

use ward_e2e::{text, Ward};

const SCRIPT: &str = "\
for m in sh sl pr ub; do grep \" /mnt/$m \" /proc/self/mountinfo; done; \
grep -E '^[0-9]+ [0-9]+ [0-9:]+ [^ ]+ / ' /proc/self/mountinfo; \
busybox stat -c 'node %n %F %t:%T %a %u:%g' /dev/ward-char /dev/ward-block; \
echo sysctl $(cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_forward); \
echo oom $(cat /proc/self/oom_score_adj); \
grep -E '^Max (open files|processes)' /proc/self/limits; \
echo ward > /dev/ward-kmsg && echo kmsg-write ok; \
head -c 0 /dev/ward-kmsg 2>&1 | grep -q 'not permitted' && echo kmsg-read denied; \
(true < /dev/ward-fuse) 2>&1 | grep -q 'not permitted' && echo fuse denied; \
head -c 1 /dev/ward-char > /dev/null && echo null ok";

/// The mountinfo line of `target`, with its optional fields (propagation tags).
fn mount_line<'a>(out: &'a str, target: &str) -> &'a str {
    let needle = format!(" {target} ");
    out.lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no mount on {target} in:\n{out}"))
}

#[test]
fn devices_propagation_sysctls_oom_rlimits_and_annotations_are_honoured() {
    let ward = Ward::new();
    let bundle = ward.bundle("fields", &["sh", "-c", SCRIPT]);
    let source = ward.dir.path().join("bind-source");
    std::fs::create_dir_all(&source).unwrap();
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let mounts = spec["mounts"].as_array_mut().unwrap();
    for (name, propagation) in [
        ("sh", "rshared"),
        ("sl", "rslave"),
        ("pr", "rprivate"),
        ("ub", "runbindable"),
    ] {
        mounts.push(serde_json::json!({
            "destination": format!("/mnt/{name}"), "type": "bind",
            "source": source, "options": ["rbind", propagation]
        }));
    }
    spec["linux"]["rootfsPropagation"] = "shared".into();
    spec["linux"]["devices"] = serde_json::json!([
        {"path": "/dev/ward-char", "type": "c", "major": 1, "minor": 3,
         "fileMode": 0o640, "uid": 1000, "gid": 5},
        {"path": "/dev/ward-block", "type": "b", "major": 7, "minor": 200,
         "fileMode": 0o600, "uid": 0, "gid": 0},
        {"path": "/dev/ward-kmsg", "type": "c", "major": 1, "minor": 11},
        {"path": "/dev/ward-fuse", "type": "c", "major": 10, "minor": 229}
    ]);
    // After the bundle's deny-all: /dev/kmsg for writing only. The fuse node is made but
    // denied (an open gets EPERM from the device program, not ENXIO from a missing
    // driver); null is among the devices every container may use.
    spec["linux"]["resources"]["devices"]
        .as_array_mut()
        .unwrap()
        .push(
            serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 11, "access": "w"}),
        );
    spec["linux"]["sysctl"] = serde_json::json!({
        "kernel.shm_rmid_forced": "1", "net.ipv4.ip_forward": "1"
    });
    spec["process"]["oomScoreAdj"] = 123.into();
    spec["process"]["rlimits"] = serde_json::json!([
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1000},
        {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400}
    ]);
    spec["annotations"] = serde_json::json!({
        "org.example.unknown-to-ward": "kept", "io.kubernetes.cri.sandbox-id": "x"
    });
    std::fs::write(&config, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), "fields"]);
    let shown = text(&out.stdout);
    assert!(
        out.status.success(),
        "ward run: {}\n{shown}",
        text(&out.stderr)
    );

    // Propagation as runc sets it on a private source: a peer group of its own for
    // rshared, nothing for a slave of a private mount or for private, unbindable as asked.
    assert!(
        mount_line(&shown, "/mnt/sh").contains(" shared:"),
        "{shown}"
    );
    for private in ["/mnt/sl", "/mnt/pr"] {
        let line = mount_line(&shown, private);
        assert!(
            !line.contains("shared:") && !line.contains("master:"),
            "{line}"
        );
    }
    assert!(
        mount_line(&shown, "/mnt/ub").contains(" unbindable "),
        "{shown}"
    );
    assert!(
        mount_line(&shown, "/").contains(" shared:"),
        "rootfsPropagation: {shown}"
    );

    assert!(
        shown.contains("node /dev/ward-char character special file 1:3 640 1000:5"),
        "{shown}"
    );
    assert!(
        shown.contains("node /dev/ward-block block special file 7:c8 600 0:0"),
        "{shown}"
    );
    for line in [
        "kmsg-write ok",
        "kmsg-read denied",
        "fuse denied",
        "null ok",
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "device rules: {line} in {shown}"
        );
    }
    assert!(shown.contains("sysctl 1 1"), "{shown}");
    assert!(shown.contains("oom 123"), "{shown}");
    let limits: Vec<Vec<&str>> = shown
        .lines()
        .filter(|l| l.starts_with("Max "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        limits.contains(&vec!["Max", "processes", "300", "400", "processes"]),
        "{limits:?}"
    );
    assert!(
        limits.contains(&vec!["Max", "open", "files", "512", "1000", "files"]),
        "{limits:?}"
    );
}
