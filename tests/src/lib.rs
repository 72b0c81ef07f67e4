//! Shared helpers of the end-to-end tests: they drive the real `ward` binary, which boots
//! real microVMs. What they need (root, QEMU, vsock, guest assets) is checked up front, and
//! a missing piece fails the test with what to do, rather than skipping it.

pub mod engines;
pub mod mounted_image;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The environment of one test: a private --root and bundle directory.
pub struct Ward {
    pub bin: PathBuf,
    pub config: PathBuf,
    pub root: PathBuf,
    pub dir: tempfile::TempDir,
}

/// A test that fails halfway leaves its containers running; their VMs would go on using
/// the CPU the next tests time themselves on. Passing tests clean up (and check it) alone.
impl Drop for Ward {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let id = entry.file_name().to_string_lossy().into_owned();
            let _ = self
                .command()
                .args(["delete", "--force", &id])
                .stdin(std::process::Stdio::null())
                .output();
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn need(ok: bool, what: &str) {
    assert!(
        ok,
        "end-to-end test prerequisite missing: {what}. Run `make test` (it installs and builds everything)"
    );
}

impl Ward {
    /// Checks the prerequisites and makes a fresh state directory.
    #[allow(clippy::new_without_default)] // it asserts prerequisites: not a plain default
    pub fn new() -> Ward {
        need(
            nix::unistd::geteuid().is_root(),
            "root (ward mounts, and runs QEMU and its helpers)",
        );
        let bin = std::env::var_os("WARD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/debug/ward"));
        need(
            bin.exists(),
            &format!("the ward binary at {} (WARD_BIN)", bin.display()),
        );
        let config = std::env::var_os("WARD_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join("build/ward-test.toml"));
        need(
            config.exists(),
            &format!("the test configuration {} (WARD_CONFIG)", config.display()),
        );
        need(
            which("qemu-system-x86_64"),
            "qemu-system-x86_64 (apt-get install qemu-system-x86)",
        );
        need(
            Path::new("/dev/vhost-vsock").exists() || which("vhost-device-vsock"),
            "/dev/vhost-vsock or vhost-device-vsock (cargo install vhost-device-vsock)",
        );
        need(
            Path::new("/bin/busybox").exists(),
            "/bin/busybox (apt-get install busybox-static)",
        );
        let dir = tempfile::Builder::new()
            .prefix("ward-e2e-")
            .tempdir()
            .expect("temporary directory");
        let root = dir.path().join("root");
        Ward {
            bin,
            config,
            root,
            dir,
        }
    }

    /// Builds a busybox bundle running `args`; returns its path.
    pub fn bundle(&self, name: &str, args: &[&str]) -> PathBuf {
        let path = self.dir.path().join(name);
        let status = Command::new(repo_root().join("tools/busybox-bundle"))
            .arg(&path)
            .arg("--")
            .args(args)
            .status()
            .expect("running tools/busybox-bundle");
        assert!(status.success(), "tools/busybox-bundle failed");
        path
    }

    /// Builds a busybox bundle running `args` and starts it as container `id` with
    /// `run --detach`, asserting that it started; returns the bundle's path.
    pub fn start(&self, id: &str, args: &[&str]) -> PathBuf {
        let bundle = self.bundle(id, args);
        let out = self.run_detached(&["run", "--detach", "--bundle", bundle.to_str().unwrap(), id]);
        assert!(
            out.status.success(),
            "run --detach {id}: {}",
            text(&out.stderr)
        );
        bundle
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .env("WARD_CONFIG", &self.config)
            .arg("--root")
            .arg(&self.root);
        command
    }

    /// Runs `ward ARGS` to completion with stdin closed.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running ward")
    }

    /// Runs a `ward` command that leaves a relay behind (create, run --detach). The relay
    /// inherits ward's stdout and stderr, as a runc container's init does, so they go to
    /// files here: a pipe would stay open for as long as the container runs.
    pub fn run_detached(&self, args: &[&str]) -> Output {
        let stamp = format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let out_path = self.dir.path().join(format!("stdout-{stamp}"));
        let err_path = self.dir.path().join(format!("stderr-{stamp}"));
        let status = self
            .command()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file"))
            .status()
            .expect("running ward");
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        }
    }

    /// Runs `ward ARGS` with another configuration file.
    pub fn run_with_config(&self, config: &Path, args: &[&str]) -> Output {
        self.command()
            .env("WARD_CONFIG", config)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running ward")
    }

    /// `ward state ID` as JSON.
    pub fn state(&self, id: &str) -> serde_json::Value {
        let out = self.run(&["state", id]);
        assert!(
            out.status.success(),
            "ward state {id}: {}",
            text(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("state prints JSON")
    }

    /// Polls `state` until the status is `want`.
    pub fn wait_status(&self, id: &str, want: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state(id);
            if state["status"] == want {
                return state;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not become {want} within {timeout:?}: {state}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// After delete: no process and no mount of the container remain, and its directory is gone.
    pub fn assert_nothing_left(&self, id: &str) {
        let dir = self.root.join(id);
        let needle = dir.display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pids_mentioning(&needle).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            pids_mentioning(&needle),
            Vec::<i64>::new(),
            "processes left"
        );
        assert_eq!(
            mounts_mentioning(&needle),
            Vec::<String>::new(),
            "mounts left"
        );
        assert!(!dir.exists(), "{} is still there", dir.display());
        engines::assert_sandbox_gone(&self.root, id);
    }

    /// A copy of the test configuration with `extra` appended (TOML).
    pub fn config_with(&self, name: &str, extra: &str) -> PathBuf {
        let base = std::fs::read_to_string(&self.config).expect("reading the test configuration");
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{base}\n{extra}\n")).expect("writing a configuration");
        path
    }
}

/// Runs `command` (its stdio as set) and waits for it at most `timeout`; a command still
/// running then is killed and None returned. For commands that leave processes holding
/// their stdout (`run --detach`), whose output goes to files.
pub fn status_within(command: &mut Command, timeout: Duration) -> Option<std::process::ExitStatus> {
    let mut child = command.spawn().expect("spawning the command");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the command") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like `Command::output` (stdin closed), but a command still running after `timeout` is
/// killed and None returned: a test waits for a guest within a bound, never for ever.
pub fn output_within(command: &mut Command, timeout: Duration) -> Option<Output> {
    use std::io::Read;
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning the command");
    fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the command") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Some(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// `GET /` from the host, retried until `deadline` while the server comes up.
pub fn http_get(addr: std::net::SocketAddr, deadline: Duration) -> Result<String, String> {
    let until = Instant::now() + deadline;
    let mut last = String::new();
    while Instant::now() < until {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut stream) => {
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let request = format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n");
                let mut response = String::new();
                use std::io::{Read, Write};
                match stream
                    .write_all(request.as_bytes())
                    .and_then(|()| stream.read_to_string(&mut response))
                {
                    Ok(_) if response.starts_with("HTTP/1.") => return Ok(response),
                    Ok(_) => last = format!("odd answer {response:?}"),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Err(last)
}

pub fn which(binary: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
        .unwrap_or(false)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `out` failed and that its stderr contains `needle`.
pub fn assert_fails_with(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure containing {needle:?}, but it succeeded; stdout: {}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains(needle),
        "expected stderr to contain {needle:?}, got: {stderr}"
    );
    assert!(
        stderr.starts_with("ward: ") || stderr.contains("\nward: ") || stderr.contains("error:"),
        "errors read like runc's, prefixed by the program name: {stderr}"
    );
}

/// Is `pid` still a live process (not a zombie)?
pub fn alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Every host PID whose command line mentions `needle`.
pub fn pids_mentioning(needle: &str) -> Vec<i64> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i64>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) && alive(pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Host mounts whose source or target mentions `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// `Key:\tvalue` lines of a /proc status file (`/proc/PID/status`, a thread's).
pub fn status_fields(path: &str) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The host processes of sandbox `id` (of `ward`'s root) whose program (argv[0]) ends
/// with `program`.
pub fn sandbox_processes(ward: &Ward, id: &str, program: &str) -> Vec<i64> {
    let needle = engines::sandbox_dir(&ward.root, id).display().to_string();
    pids_mentioning(&needle)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                text(&raw)
                    .split('\0')
                    .next()
                    .is_some_and(|argv0| argv0.ends_with(program))
            })
        })
        .collect()
}
