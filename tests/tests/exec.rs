//! `ward exec`: further processes in a running container's microVM.

use std::time::{Duration, Instant};

use ward_e2e::{alive, assert_fails_with, text, Ward};

#[test]
fn exec_runs_in_the_guest_with_stdio_env_and_exit_codes() {
    let ward = Ward::new();
    ward.start("box", &["sleep", "1000"]);

    // The guest's kernel, not the host's.
    let out = ward.run(&["exec", "box", "cat", "/proc/version"]);
    assert!(out.status.success(), "exec: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("-ward"), "{}", text(&out.stdout));

    // The exit status is the exec's.
    let out = ward.run(&["exec", "box", "sh", "-c", "echo oops >&2; exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(text(&out.stderr).contains("oops"));

    // stdin reaches the process, and its EOF too.
    let mut child = ward
        .command()
        .args(["exec", "box", "wc", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ward exec");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&vec![b'x'; 100_000]).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), "100000");

    // --env, --cwd, --user.
    let out = ward.run(&[
        "exec",
        "--env",
        "GREETING=hi",
        "--cwd",
        "/tmp",
        "--user",
        "65534:65534",
        "box",
        "sh",
        "-c",
        "echo $GREETING $(pwd) $(id -u):$(id -g)",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi /tmp 65534:65534\n");

    // --process FILE.
    let process = ward.dir.path().join("process.json");
    std::fs::write(
        &process,
        r#"{"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["sh", "-c", "echo from-file; exit 4"],
            "env": ["PATH=/bin"], "cwd": "/"}"#,
    )
    .unwrap();
    let out = ward.run(&["exec", "--process", process.to_str().unwrap(), "box"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "from-file\n");

    // --detach with a pid file: the relay stands for the process and ends with it.
    let pid_file = ward.dir.path().join("exec.pid");
    let out = ward.run_detached(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "box",
        "sleep",
        "1",
    ]);
    assert!(out.status.success(), "exec -d: {}", text(&out.stderr));
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "the exec relay outlived its process");
    assert_eq!(
        ward.state("box")["status"],
        "running",
        "an exec's exit is not the container's"
    );

    // A terminal in the foreground: the guest process has a tty of the container's own
    // devpts, and the terminal's output processing turns \n into \r\n.
    let out = ward.run(&["exec", "--tty", "box", "sh", "-c", "tty; echo done"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.starts_with("/dev/pts/") && shown.contains("\r\ndone\r\n"),
        "{shown:?}"
    );

    // Errors: a missing command, a terminal with nowhere to go, an unknown container.
    assert_fails_with(&ward.run(&["exec", "box"]), "needs a command");
    assert_fails_with(
        &ward.run(&["exec", "--detach", "--tty", "box", "sh"]),
        "cannot allocate tty if ward will detach without setting console socket",
    );
    assert_fails_with(
        &ward.run(&["exec", "--console-socket", "/tmp/nope.sock", "box", "true"]),
        "cannot use console socket if ward will not detach or allocate tty",
    );
    assert_fails_with(
        &ward.run(&["exec", "nope", "true"]),
        "container \"nope\" does not exist",
    );
    let out = ward.run(&["exec", "box", "no-such-program"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no-such-program"),
        "{}",
        text(&out.stderr)
    );

    // Not in a stopped container.
    let out = ward.run(&["kill", "box", "KILL"]);
    assert!(out.status.success());
    ward.wait_status("box", "stopped", Duration::from_secs(60));
    assert_fails_with(&ward.run(&["exec", "box", "true"]), "it is stopped");
    let out = ward.run(&["delete", "box"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
