//! `linux.seccomp` in the guest: the agent loads the container's profile into its init and
//! every exec, as runc does on the host (agent/src/container/seccomp.rs), with
//! `noNewPrivileges` (the filter is the last step before execve) and without (loaded
//! before the capabilities and user change); podman's default profile and
//! `--security-opt seccomp=unconfined` through podman.

use ward_e2e::engines::{Podman, IMAGE};
use ward_e2e::{assert_fails_with, text, Ward};

/// Every other call allowed; mkdir and mkdirat fail with EPERM.
fn no_mkdir_profile() -> serde_json::Value {
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat", "no_such_syscall_is_skipped"],
             "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]
    })
}

/// A busybox bundle running `args` with `seccomp` as its profile.
fn bundle_with(
    ward: &Ward,
    name: &str,
    args: &[&str],
    seccomp: serde_json::Value,
    no_new_privileges: bool,
) -> std::path::PathBuf {
    let bundle = ward.bundle(name, args);
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["linux"]["seccomp"] = seccomp;
    spec["process"]["noNewPrivileges"] = no_new_privileges.into();
    std::fs::write(&config, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    bundle
}

#[test]
fn the_profile_denies_mkdir_to_the_init_and_to_execs() {
    let ward = Ward::new();

    // The init, without no_new_privs: the filter goes in before the capabilities drop.
    let script = "busybox mkdir /tmp/x; echo mkdir=$?; grep '^Seccomp:' /proc/self/status; \
                  echo written > /tmp/file && cat /tmp/file; ls -d /tmp/x";
    let bundle = bundle_with(
        &ward,
        "init",
        &["sh", "-c", script],
        no_mkdir_profile(),
        false,
    );
    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), "sc-init"]);
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        shown.contains("mkdir: can't create directory '/tmp/x': Operation not permitted"),
        "{shown}"
    );
    assert!(shown.contains("mkdir=1\n"), "{shown}");
    assert!(shown.contains("Seccomp:\t2\n"), "{shown}");
    assert!(shown.contains("written\n"), "other calls work: {shown}");
    assert!(
        shown.contains("/tmp/x: No such file or directory"),
        "{shown}"
    );
    ward.assert_nothing_left("sc-init");

    // A running container with no_new_privs, and its execs: they load the container's
    // profile too.
    let bundle = bundle_with(&ward, "box", &["sleep", "1000"], no_mkdir_profile(), true);
    let out = ward.run_detached(&[
        "run",
        "--detach",
        "--bundle",
        bundle.to_str().unwrap(),
        "sc-box",
    ]);
    assert!(out.status.success(), "run --detach: {}", text(&out.stderr));
    let out = ward.run(&["exec", "sc-box", "busybox", "mkdir", "/tmp/y"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "mkdir: can't create directory '/tmp/y': Operation not permitted\n"
    );
    let out = ward.run(&[
        "exec",
        "sc-box",
        "grep",
        "^Seccomp:",
        "/proc/self/status",
        "/proc/1/status",
    ]);
    assert!(out.status.success(), "exec grep: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "/proc/self/status:Seccomp:\t2\n/proc/1/status:Seccomp:\t2\n"
    );
    let out = ward.run(&[
        "exec",
        "sc-box",
        "sh",
        "-c",
        "echo hi > /tmp/f && cat /tmp/f",
    ]);
    assert!(out.status.success(), "exec: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    let out = ward.run(&["delete", "--force", "sc-box"]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    ward.assert_nothing_left("sc-box");
}

#[test]
fn a_profile_the_agent_cannot_apply_fails_the_create_and_says_why() {
    let ward = Ward::new();
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["openat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let bundle = bundle_with(&ward, "notify", &["true"], profile, true);
    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), "sc-notify"]);
    assert_fails_with(&out, "SCMP_ACT_NOTIFY");
    assert!(
        text(&out.stderr).contains("linux.seccomp: syscalls[0] (openat)"),
        "{}",
        text(&out.stderr)
    );
    ward.assert_nothing_left("sc-notify");
}

#[test]
fn podman_default_profile_and_unconfined() {
    let ward = Ward::new();
    let podman = Podman::with_ward(&ward);
    let out = podman.run(&["run", "--rm", IMAGE, "grep", "^Seccomp:", "/proc/1/status"]);
    assert!(out.status.success(), "podman run: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Seccomp:\t2\n",
        "podman's default profile"
    );

    let out = podman.run(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        IMAGE,
        "grep",
        "^Seccomp:",
        "/proc/1/status",
    ]);
    assert!(out.status.success(), "podman run: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Seccomp:\t0\n", "seccomp=unconfined");
}
