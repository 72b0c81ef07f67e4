//! The contract between the container engines and their OCI runtime, as the engines
//! installed here (podman 4.3 through conmon, containerd 1.6 through its runc shim) keep
//! it with runc, recorded in tests/contracts/ by tests/contracts/record.sh: the same
//! engine command sequences, with tests/contracts/runtime-recorder wrapped around ward,
//! must call ward with every command-line shape they call runc with, and ward must accept
//! each of them as runc did.
//!
//! A shape is a call's arguments with container IDs made `<ID>` and absolute paths
//! `<PATH>`, plus whether stdin was a terminal; the global `--config=<PATH>` podman passes
//! to ward (`--runtime-flag config=...`, as conmon passes no environment) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ward_e2e::engines::{absolute, contracts_dir, need_engines, Containerd, Podman, IMAGE};
use ward_e2e::{text, which, Ward};

const PODMAN_CONTRACT: &str = "podman-4.3-runc.log";
const CONTAINERD_CONTRACT: &str = "containerd-1.6-runc.log";

/// One runtime call: its shape and exit status.
#[derive(Debug, Clone)]
struct Call {
    shape: String,
    exit: i32,
}

/// Installs the recorder in `dir` as `name`, in front of `runtime`; returns its path.
fn recorder(dir: &Path, name: &str, runtime: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("recorder directory");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    symlink(contracts_dir().join("runtime-recorder"), &path).expect("recorder link");
    std::fs::write(
        dir.join(format!("{name}.runtime")),
        format!("{}\n", absolute(runtime).display()),
    )
    .expect("recorder's runtime file");
    path
}

fn normalize_arg(arg: &str, ids: &[&str]) -> String {
    let is_id =
        |a: &str| ids.contains(&a) || (a.len() == 64 && a.bytes().all(|b| b.is_ascii_hexdigit()));
    if is_id(arg) {
        "<ID>".to_string()
    } else if arg.starts_with('/') {
        "<PATH>".to_string()
    } else if let Some((flag, value)) = arg.split_once('=') {
        if flag.starts_with("--") && value.starts_with('/') {
            format!("{flag}=<PATH>")
        } else {
            arg.to_string()
        }
    } else {
        arg.to_string()
    }
}

/// Reads a recorder log into calls, in the order they started.
fn calls(log: &Path, ids: &[&str]) -> Vec<Call> {
    let raw = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("reading the recorder's log {}: {e}", log.display()));
    let mut started: Vec<(String, String)> = Vec::new();
    let mut exits: BTreeMap<String, i32> = BTreeMap::new();
    for line in raw.lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        if let Some(call) = rest.strip_prefix("call ") {
            let mut words = call.split(' ');
            let stdin = words.next().unwrap_or_default();
            let args: Vec<String> = words
                .map(|a| normalize_arg(a, ids))
                .filter(|a| a != "--config=<PATH>")
                .collect();
            started.push((pid.to_string(), format!("{stdin} {}", args.join(" "))));
        } else if let Some(status) = rest.strip_prefix("exit=") {
            exits.insert(pid.to_string(), status.trim().parse().unwrap_or(-1));
        }
    }
    started
        .into_iter()
        .map(|(pid, shape)| Call {
            exit: exits.get(&pid).copied().unwrap_or(-1),
            shape,
        })
        .collect()
}

/// Reads a recorded contract: `SHAPE -> exit N` lines, `#` comments.
fn contract(name: &str) -> Vec<Call> {
    let path = contracts_dir().join(name);
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading the contract {}: {e} (tests/contracts/record.sh makes it)",
            path.display()
        )
    });
    raw.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (shape, exit) = l
                .rsplit_once(" -> exit ")
                .unwrap_or_else(|| panic!("{name}: not `SHAPE -> exit N`: {l}"));
            Call {
                shape: shape.to_string(),
                exit: exit.trim().parse().expect("exit status"),
            }
        })
        .collect()
}

fn version(command: &str, args: &[&str]) -> String {
    std::process::Command::new(command)
        .args(args)
        .output()
        .map(|o| {
            text(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

fn write_contract(name: &str, about: &str, calls: &[Call]) {
    let mut out = format!(
        "# {about}\n\
         # runc: {runc}\n\
         # Made by tests/contracts/record.sh (see README.md): one line per runtime call, in\n\
         # order: whether stdin was a terminal, the arguments with container IDs as <ID> and\n\
         # absolute paths as <PATH>, and the runtime's exit status.\n",
        runc = version("runc", &["--version"]),
    );
    for call in calls {
        out.push_str(&format!("{} -> exit {}\n", call.shape, call.exit));
    }
    std::fs::write(contracts_dir().join(name), out).expect("writing the contract");
}

/// Asserts that every shape of `contract` appears among `seen` and exited as it did there.
fn assert_keeps(engine: &str, contract: &[Call], seen: &[Call], log: &Path) {
    let mut problems = Vec::new();
    let shapes: BTreeSet<&str> = contract.iter().map(|c| c.shape.as_str()).collect();
    for shape in &shapes {
        let want: BTreeSet<i32> = contract
            .iter()
            .filter(|c| c.shape == *shape)
            .map(|c| c.exit)
            .collect();
        let got: Vec<i32> = seen
            .iter()
            .filter(|c| c.shape == *shape)
            .map(|c| c.exit)
            .collect();
        if got.is_empty() {
            problems.push(format!("never called: {shape}"));
        } else if got.iter().any(|e| !want.contains(e)) {
            problems.push(format!("exit {got:?}, runc's {want:?}: {shape}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{engine} does not drive ward as it drives runc:\n  {}\nward's calls:\n  {}\n(raw log: {})",
        problems.join("\n  "),
        seen.iter()
            .map(|c| format!("{} -> exit {}", c.shape, c.exit))
            .collect::<Vec<_>>()
            .join("\n  "),
        log.display()
    );
}

/// Runs `podman ARGS`, asserting success.
fn podman_ok(podman: &Podman, args: &[&str]) {
    let out = podman.run(args);
    assert!(
        out.status.success(),
        "podman {} failed ({}): {}",
        args.join(" "),
        out.status,
        text(&out.stderr)
    );
}

/// The podman commands whose runtime calls make the contract: run (plain and with a
/// terminal), exec (plain and with a terminal), pause, unpause, stop that ends in
/// SIGKILL, kill, rm.
fn podman_sequence(podman: &Podman, tag: &str) {
    podman_ok(podman, &["run", "--rm", IMAGE, "true"]);
    podman_ok(podman, &["run", "-t", "--rm", IMAGE, "true"]);
    let n = format!("contract-{tag}-{}", std::process::id());
    podman_ok(podman, &["run", "-d", "--name", &n, IMAGE, "sleep", "1000"]);
    podman_ok(podman, &["exec", &n, "true"]);
    podman_ok(podman, &["exec", "-t", &n, "true"]);
    podman_ok(podman, &["pause", &n]);
    podman_ok(podman, &["unpause", &n]);
    // sleep as PID 1 has no TERM handler, so stop's TERM does nothing and SIGKILL follows.
    podman_ok(podman, &["stop", "--time", "1", &n]);
    podman_ok(podman, &["rm", &n]);
    podman_ok(podman, &["run", "-d", "--name", &n, IMAGE, "sleep", "1000"]);
    podman_ok(podman, &["kill", "--signal", "KILL", &n]);
    podman_ok(podman, &["rm", "--force", &n]);
}

const CTR_IDS: &[&str] = &["contract-rm", "contract-d"];

/// The ctr commands whose runtime calls make the contract: run --rm, run -d, task exec,
/// task ps, task pause, task resume, task kill, task delete, container rm.
fn containerd_sequence(containerd: &Containerd) {
    let out = containerd.run(&["--rm"], "contract-rm", &["true"]);
    assert!(out.status.success(), "ctr run --rm: {}", text(&out.stderr));
    let id = "contract-d";
    let out = containerd.run(&["--detach"], id, &["sleep", "1000"]);
    assert!(out.status.success(), "ctr run -d: {}", text(&out.stderr));
    containerd.wait_task(id, "RUNNING", Duration::from_secs(30));
    containerd.ok(&["task", "exec", "--exec-id", "e1", id, "true"]);
    containerd.ok(&["task", "ps", id]);
    containerd.ok(&["task", "pause", id]);
    containerd.ok(&["task", "resume", id]);
    containerd.ok(&["task", "kill", "--signal", "SIGKILL", id]);
    containerd.wait_task(id, "STOPPED", Duration::from_secs(20));
    containerd.ok(&["task", "delete", id]);
    containerd.ok(&["container", "rm", id]);
}

#[test]
fn podman_drives_ward_as_it_drives_runc() {
    let ward = Ward::new();
    let contract = contract(PODMAN_CONTRACT);
    let rec = recorder(&ward.dir.path().join("rec"), "ward", &ward.bin);
    let podman = Podman::with_runtime(
        &rec,
        &[format!("config={}", absolute(&ward.config).display())],
    );
    podman_sequence(&podman, "ward");
    let log = rec.with_extension("log");
    assert_keeps("podman", &contract, &calls(&log, &[]), &log);
}

#[test]
fn containerd_drives_ward_as_it_drives_runc() {
    let ward = Ward::new();
    let contract = contract(CONTAINERD_CONTRACT);
    let rec = recorder(&ward.dir.path().join("rec"), "ward", &ward.bin);
    let config = absolute(&ward.config);
    let containerd = Containerd::start(&rec, &[("WARD_CONFIG", &config)]);
    containerd_sequence(&containerd);
    let log = rec.with_extension("log");
    assert_keeps("containerd", &contract, &calls(&log, CTR_IDS), &log);
}

/// Records the contracts with runc: run by tests/contracts/record.sh, which sets
/// WARD_CONTRACT_RECORD=1 (so a plain `cargo test -- --ignored` leaves them alone).
#[test]
#[ignore = "records tests/contracts/*.log with runc: tests/contracts/record.sh"]
fn record_runc_contracts() {
    assert!(
        std::env::var_os("WARD_CONTRACT_RECORD").is_some(),
        "this rewrites tests/contracts/*.log: run tests/contracts/record.sh"
    );
    need_engines();
    assert!(which("runc"), "runc in PATH (apt-get install runc)");
    let runc = PathBuf::from(
        text(
            &std::process::Command::new("sh")
                .args(["-c", "command -v runc"])
                .output()
                .expect("sh")
                .stdout,
        )
        .trim(),
    );
    let dir = tempfile::Builder::new()
        .prefix("ward-contract-")
        .tempdir()
        .expect("temporary directory");

    let rec = recorder(&dir.path().join("podman"), "runc", &runc);
    let podman = Podman::with_runtime(&rec, &[]);
    podman_sequence(&podman, "runc");
    let podman_calls = calls(&rec.with_extension("log"), &[]);
    write_contract(
        PODMAN_CONTRACT,
        &format!(
            "{} through {}, driving runc",
            version("podman", &["--version"]),
            version("conmon", &["--version"])
        ),
        &podman_calls,
    );

    let rec = recorder(&dir.path().join("containerd"), "runc", &runc);
    let containerd = Containerd::start(&rec, &[]);
    containerd_sequence(&containerd);
    let containerd_calls = calls(&rec.with_extension("log"), CTR_IDS);
    drop(containerd);
    write_contract(
        CONTAINERD_CONTRACT,
        &format!(
            "{} (ctr run --runc-binary, shim io.containerd.runc.v2), driving runc",
            version("containerd", &["--version"])
        ),
        &containerd_calls,
    );
}
