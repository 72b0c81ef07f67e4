//! OCI hooks (runtime-spec 1.1): prestart, createRuntime, poststart and poststop on the
//! host, createContainer and startContainer in the container, each with the container's
//! state on stdin, in order; a failing create hook fails the create and leaves nothing;
//! podman's hooks directory works through ward.

use std::path::Path;
use std::time::Duration;

use ward_e2e::engines::{ward_processes_mentioning, Podman, IMAGE};
use ward_e2e::{assert_fails_with, text, Ward};

/// A hook that appends "STAGE <state JSON>" to `log`.
fn recorder(stage: &str, log: &Path) -> serde_json::Value {
    serde_json::json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("printf '%s ' {stage} >> {0}; cat >> {0}; echo >> {0}", log.display())],
        "timeout": 30
    })
}

/// The (stage, state) lines of a recorder log.
fn records(log: &Path) -> Vec<(String, serde_json::Value)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let (stage, state) = line.split_once(' ').expect("STAGE STATE");
            (
                stage.to_string(),
                serde_json::from_str(state).expect("the state is JSON"),
            )
        })
        .collect()
}

/// The same for a hook run in the container (busybox's sh: `echo -n`), logging to a path
/// of the container's root.
fn guest_recorder(stage: &str, log: &str) -> serde_json::Value {
    serde_json::json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("echo -n '{stage} ' >> {log}; cat >> {log}; echo >> {log}")],
        "timeout": 30
    })
}

fn with_hooks(bundle: &Path, hooks: serde_json::Value) {
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["hooks"] = hooks;
    std::fs::write(&config, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

#[test]
fn host_hooks_run_in_order_with_the_state_of_their_stage() {
    let ward = Ward::new();
    let log = ward.dir.path().join("hooks.log");
    let bundle = ward.bundle("hooked", &["sleep", "1000"]);
    with_hooks(
        &bundle,
        serde_json::json!({
            "prestart": [recorder("prestart", &log)],
            "createRuntime": [recorder("createRuntime", &log)],
            "createContainer": [guest_recorder("createContainer", "/hooks.log")],
            "startContainer": [guest_recorder("startContainer", "/hooks.log")],
            "poststart": [recorder("poststart", &log)],
            "poststop": [recorder("poststop", &log)]
        }),
    );
    let b = bundle.to_str().unwrap();
    let out = ward.run_detached(&["create", "--bundle", b, "hooked"]);
    assert!(out.status.success(), "create: {}", text(&out.stderr));
    let stages: Vec<String> = records(&log).into_iter().map(|(s, _)| s).collect();
    assert_eq!(stages, ["prestart", "createRuntime"], "after create");
    let pid = ward.state("hooked")["pid"].clone();

    let out = ward.run(&["start", "hooked"]);
    assert!(out.status.success(), "start: {}", text(&out.stderr));
    assert_eq!(records(&log).len(), 3, "poststart ran once start returned");
    // The guest's stages ran in the container (their log is in its root filesystem), with
    // the state as the guest sees the container.
    let guest = records(&bundle.join("rootfs/hooks.log"));
    let stages: Vec<&str> = guest.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stages, ["createContainer", "startContainer"]);
    for ((stage, state), status) in guest.iter().zip(["creating", "created"]) {
        assert_eq!(state["status"], status, "{stage}: {state}");
        assert_eq!(state["id"], "hooked", "{stage}: {state}");
        assert_eq!(state["bundle"], "/run/ward/sandbox/hooked", "{stage}");
        assert!(state["pid"].as_i64().unwrap_or(0) > 1, "{stage}: {state}");
    }
    let out = ward.run(&["kill", "hooked", "KILL"]);
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    ward.wait_status("hooked", "stopped", Duration::from_secs(60));
    let out = ward.run(&["delete", "hooked"]);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));

    let records = records(&log);
    let stages: Vec<&str> = records.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        stages,
        ["prestart", "createRuntime", "poststart", "poststop"]
    );
    for ((stage, state), status) in records
        .iter()
        .zip(["creating", "creating", "running", "stopped"])
    {
        assert_eq!(state["status"], status, "{stage}: {state}");
        assert_eq!(state["id"], "hooked", "{stage}: {state}");
        assert_eq!(
            Path::new(state["bundle"].as_str().unwrap()),
            std::fs::canonicalize(&bundle).unwrap(),
            "{stage}"
        );
        assert_eq!(
            state["pid"], pid,
            "{stage}: the relay's PID, as `state` shows"
        );
    }
}

#[test]
fn a_failing_prestart_hook_fails_the_create_and_leaves_nothing() {
    let ward = Ward::new();
    let log = ward.dir.path().join("hooks.log");
    let bundle = ward.bundle("badhook", &["true"]);
    with_hooks(
        &bundle,
        serde_json::json!({
            "prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "echo refused >&2; exit 4"]}],
            "createRuntime": [recorder("createRuntime", &log)],
            "poststop": [recorder("poststop", &log)]
        }),
    );
    let out = ward.run_detached(&["create", "--bundle", bundle.to_str().unwrap(), "badhook"]);
    assert_fails_with(&out, "prestart hook #0 (/bin/sh) failed: exit status 4");
    assert!(
        text(&out.stderr).contains("refused"),
        "{}",
        text(&out.stderr)
    );
    let stages: Vec<String> = records(&log).into_iter().map(|(s, _)| s).collect();
    assert_eq!(stages, ["poststop"], "createRuntime skipped, poststop run");
    assert_eq!(text(&ward.run(&["list", "-q"]).stdout), "");
    assert!(!ward.root.join("badhook").exists());
    let left = ward_processes_mentioning(&[ward.root.to_str().unwrap()]);
    assert!(left.is_empty(), "processes left: {left:#?}");
    ward_e2e::engines::assert_sandbox_gone(&ward.root, "badhook");

    // A hook past its timeout is killed and fails the create the same way.
    with_hooks(
        &bundle,
        serde_json::json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "100"], "timeout": 1}]}),
    );
    let out = ward.run_detached(&["create", "--bundle", bundle.to_str().unwrap(), "slowhook"]);
    assert_fails_with(
        &out,
        "createRuntime hook #0 (/bin/sleep) timed out after 1 s",
    );
    assert!(!ward.root.join("slowhook").exists());
}

#[test]
fn podmans_hooks_directory_runs_through_ward() {
    let ward = Ward::new();
    let podman = Podman::with_ward(&ward);
    let dir = ward.dir.path().join("hooks.d");
    std::fs::create_dir_all(&dir).unwrap();
    let log = ward.dir.path().join("podman-hooks.log");
    for stage in ["prestart", "createRuntime", "poststart"] {
        let hook = serde_json::json!({
            "version": "1.0.0",
            "hook": recorder(stage, &log),
            "when": {"always": true},
            "stages": [stage]
        });
        std::fs::write(
            dir.join(format!("{stage}.json")),
            serde_json::to_vec(&hook).unwrap(),
        )
        .unwrap();
    }
    let name = format!("we{}-hooks", std::process::id());
    let out = podman.run(&[
        "--hooks-dir",
        dir.to_str().unwrap(),
        "run",
        "--name",
        &name,
        IMAGE,
        "echo",
        "hooked",
    ]);
    assert!(
        out.status.success(),
        "podman run with a hooks dir: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), "hooked");
    let id = podman.inspect(&name, "{{.Id}}");
    podman.ok(&["rm", &name]);
    let records = records(&log);
    let stages: Vec<&str> = records.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(stages, ["prestart", "createRuntime", "poststart"]);
    for (stage, state) in &records {
        assert_eq!(state["id"], id.as_str(), "{stage}: {state}");
        assert!(state["pid"].as_i64().unwrap_or(0) > 0, "{stage}: {state}");
    }
}
