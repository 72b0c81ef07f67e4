use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::ProcessRecord;

fn sh(dir: &Path, script: &str) -> Program {
    Program::new(
        "sh",
        Path::new("/bin/sh"),
        &["-c", script],
        dir,
        &dir.join("out.log"),
    )
    .expect("program")
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (parent PID, session ID) from /proc/PID/stat.
fn ppid_and_session(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect(")") + 2..].split(' ').collect();
    (
        fields[1].parse().expect("ppid"),
        fields[3].parse().expect("sid"),
    )
}

#[test]
fn detached_program_is_reparented_logged_and_given_only_its_fds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (r, w) = pipe().expect("pipe");
    let mut program = sh(
        dir.path(),
        "echo out; echo err >&2; echo via3 >&3; ls /proc/self/fd > fds; pwd > cwd; sleep 1",
    );
    assert_eq!(program.pass_fd(w).expect("pass"), 3);
    let pid = spawn_detached(&program).expect("spawn");
    drop(program);

    let (ppid, sid) = ppid_and_session(pid);
    assert_ne!(
        ppid,
        std::process::id() as i32,
        "the helper must not be our child"
    );
    let our_sid = nix::unistd::getsid(None).expect("getsid").as_raw();
    assert_ne!(sid, our_sid, "the helper runs in a session of its own");

    let mut via3 = String::new();
    std::fs::File::from(r)
        .read_to_string(&mut via3)
        .expect("read passed pipe");
    assert_eq!(via3, "via3\n");

    let record = ProcessRecord::of("sh", pid).expect("still running");
    assert!(record.wait_gone(Duration::from_secs(5)));
    let log = std::fs::read_to_string(dir.path().join("out.log")).expect("log");
    assert!(log.contains("out\n") && log.contains("err\n"), "{log}");
    // ls itself opens one descriptor for the listing: 0, 1, 2, 3 and that one.
    let fds = std::fs::read_to_string(dir.path().join("fds")).expect("fds");
    assert_eq!(fds.lines().count(), 5, "open fds: {fds}");
    let cwd = std::fs::read_to_string(dir.path().join("cwd")).expect("cwd");
    assert_eq!(
        Path::new(cwd.trim()),
        dir.path().canonicalize().expect("canon")
    );
}

#[test]
fn exec_failure_is_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = Program::new(
        "nothing",
        Path::new("/nonexistent/program"),
        &[] as &[&str],
        dir.path(),
        &dir.path().join("log"),
    )
    .expect("program");
    match spawn_detached(&program) {
        Err(Error::Spawn { what, source }) => {
            assert_eq!(what, "nothing");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a spawn error, got {other:?}"),
    }
}

#[test]
fn supervised_helper_ends_with_the_process_it_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let helper = sh(dir.path(), "exec sleep 100");
    let supervised = spawn_supervised(&helper).expect("supervised");
    let helper_rec = ProcessRecord::of("helper", supervised.helper).expect("helper runs");
    let watcher_rec = ProcessRecord::of("watcher", supervised.watcher).expect("watcher runs");
    assert_eq!(ppid_and_session(supervised.helper).0, supervised.watcher);
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", supervised.watcher)).expect("comm");
    assert_eq!(comm.trim(), "ward-watch");

    let vmm = spawn_detached(&sh(dir.path(), "sleep 0.3")).expect("vmm");
    let vmm_rec = ProcessRecord::of("vmm", vmm).expect("vmm runs");
    supervised.follow(vmm).expect("follow");
    std::thread::sleep(Duration::from_millis(100));
    assert!(helper_rec.is_alive(), "the helper lives while the VMM does");

    assert!(vmm_rec.wait_gone(Duration::from_secs(5)));
    wait_for("the helper to stop", Duration::from_secs(5), || {
        !helper_rec.is_alive()
    });
    wait_for("the watcher to exit", Duration::from_secs(5), || {
        !watcher_rec.is_alive()
    });
}

#[test]
fn supervised_helper_stops_when_the_launch_is_abandoned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let supervised = spawn_supervised(&sh(dir.path(), "exec sleep 100")).expect("spawn");
    let helper = ProcessRecord::of("helper", supervised.helper).expect("helper runs");
    let watcher = ProcessRecord::of("watcher", supervised.watcher).expect("watcher runs");
    drop(supervised);
    wait_for("the helper to stop", Duration::from_secs(5), || {
        !helper.is_alive()
    });
    wait_for("the watcher to exit", Duration::from_secs(5), || {
        !watcher.is_alive()
    });
}

#[test]
fn killing_the_watcher_kills_the_helper() {
    let dir = tempfile::tempdir().expect("tempdir");
    let supervised = spawn_supervised(&sh(dir.path(), "exec sleep 100")).expect("spawn");
    let helper = ProcessRecord::of("helper", supervised.helper).expect("helper runs");
    let watcher = ProcessRecord::of("watcher", supervised.watcher).expect("watcher runs");
    assert!(watcher.terminate(Duration::from_secs(2)));
    wait_for("the helper to die", Duration::from_secs(5), || {
        !helper.is_alive()
    });
    drop(supervised);
}

#[test]
fn finds_binaries_in_path() {
    assert!(find_binary(Path::new("sh")).is_some());
    assert_eq!(
        find_binary(Path::new("/bin/sh")).as_deref(),
        Some(Path::new("/bin/sh"))
    );
    assert!(find_binary(Path::new("no-such-binary-ward")).is_none());
}

/// A regular file stands in for `cgroup.procs`: the intermediate process writes "0" to it
/// before the program exists.
#[test]
fn a_program_joins_its_cgroup_before_it_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cgroup = dir.path().join("cg");
    std::fs::create_dir(&cgroup).expect("mkdir");
    std::fs::write(cgroup.join("cgroup.procs"), "").expect("procs");
    let join = CgroupJoin::open(std::slice::from_ref(&cgroup)).expect("open");
    let program = sh(dir.path(), "true").cgroup(&join).expect("cgroup");
    spawn_detached(&program).expect("spawn");
    assert_eq!(
        std::fs::read_to_string(cgroup.join("cgroup.procs")).expect("read"),
        "0"
    );
}

/// A cgroup that refuses the process (here a `cgroup.procs` that is /dev/full) fails the
/// start with an error that says so, and nothing runs.
#[test]
fn a_refused_cgroup_join_fails_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cgroup = dir.path().join("cg");
    std::fs::create_dir(&cgroup).expect("mkdir");
    std::os::unix::fs::symlink("/dev/full", cgroup.join("cgroup.procs")).expect("symlink");
    let join = CgroupJoin::open(std::slice::from_ref(&cgroup)).expect("open");
    let marker = dir.path().join("ran");
    let program = sh(dir.path(), &format!("touch {}", marker.display()))
        .cgroup(&join)
        .expect("cgroup");
    let err = spawn_detached(&program).expect_err("the join must fail");
    assert!(
        matches!(err, Error::CgroupJoin { .. }),
        "unexpected error: {err}"
    );
    assert!(err.to_string().contains("host cgroup"), "{err}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!marker.exists(), "the program ran outside its cgroup");
}

/// The real thing, where this test may make a cgroup (root with a writable cgroupfs):
/// the program, and the helper of a supervised one with its watcher, are in it.
#[test]
fn programs_and_watchers_land_in_a_real_cgroup() {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (base, controller) = if v2 {
        ("/sys/fs/cgroup", "")
    } else {
        ("/sys/fs/cgroup/pids", "pids")
    };
    let name = format!("ward-detach-test-{}", std::process::id());
    let cgroup = Path::new(base).join(&name);
    if std::fs::create_dir(&cgroup).is_err() {
        eprintln!("skipped: cannot create {}", cgroup.display());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let join = CgroupJoin::open(std::slice::from_ref(&cgroup)).expect("open");
    let program = sh(dir.path(), "sleep 30").cgroup(&join).expect("cgroup");
    let pid = spawn_detached(&program).expect("spawn");
    let supervised = spawn_supervised(&program).expect("supervised");
    let in_cgroup = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
                controllers.is_some_and(|c| c.split(',').any(|c| c == controller))
                    && path == Some(&format!("/{name}"))
            })
    };
    let results = [
        ("program", in_cgroup(pid)),
        ("helper", in_cgroup(supervised.helper)),
        ("watcher", in_cgroup(supervised.watcher)),
    ];
    // Everything in the cgroup is this test's: the programs, the watcher, and the shells'
    // children (sleep), which are in it too.
    wait_for("the cgroup to empty", Duration::from_secs(10), || {
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        for p in procs
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: plain kill of processes this test started.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        std::fs::remove_dir(&cgroup).is_ok()
    });
    drop(supervised);
    for (what, inside) in results {
        assert!(inside, "the {what} is not in {}", cgroup.display());
    }
}
