//! The container engines ward is meant to serve, driven for real: podman (through conmon)
//! and containerd (through its runc shim, io.containerd.runc.v2). Both run with private
//! state: podman with its own storage, run root and tmpdir (the host's podman storage is
//! never touched), containerd as a private daemon with its own root, state, socket and
//! namespace, started per test and stopped by a Drop guard. Likewise a private dockerd
//! (Debian's docker 20.10, [`Docker`]) and a private containerd with its CRI plugin
//! ([`CriContainerd`]) for a gRPC CRI client.
//!
//! There is no image registry here, so the image is made locally, once per test binary:
//! a busybox root filesystem imported into podman as `localhost/ward-busybox:test`, saved
//! as an OCI archive for containerd.
//!
//! What the engines need is checked up front ([`need_engines`]); a missing piece fails the
//! test with what to do, rather than skipping it.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{alive, need, pids_mentioning, repo_root, text, which};

/// The image every engine test runs.
pub const IMAGE: &str = "localhost/ward-busybox:test";

/// Busybox applets the image links to /bin/busybox.
const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "true", "false", "ls", "id", "tty", "stty", "hostname", "uname",
    "env", "ps", "date", "head", "tail", "grep", "pwd", "kill", "test", "mkdir", "readlink",
    "httpd", "wget", "nc",
];

/// podman's configuration for the tests.
///
/// The rlimits are podman's defaults made attainable here: the test's processes lack
/// CAP_SYS_RESOURCE, and podman's default ulimits (the host's hard nproc, a nofile above
/// the hard limit) fail with EPERM in runc.
///
/// `runtime_supports_json` is podman's list with ward added: podman picks it by the
/// runtime's file name, and for the runtimes listed conmon passes `--log-format=json --log
/// FILE` and reads the runtime's errors from that file, as it does with runc (see
/// tests/contracts/podman-4.3-runc.log); without it podman calls ward differently from runc.
const CONTAINERS_CONF: &str = "[containers]\n\
    default_ulimits = [\"nofile=1024:1024\", \"nproc=32768:32768\"]\n\
    [engine]\n\
    runtime_supports_json = [\"crun\", \"runc\", \"kata\", \"runsc\", \"youki\", \"krun\", \"ward\"]\n";

/// Asserts what the engine tests need besides what [`crate::Ward::new`] checks.
pub fn need_engines() {
    need(
        nix::unistd::geteuid().is_root(),
        "root (podman and containerd run rootful)",
    );
    for (binary, package) in [
        ("podman", "podman"),
        ("conmon", "conmon"),
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("tmux", "tmux"),
        ("busybox", "busybox-static"),
    ] {
        need(
            which(binary) || Path::new("/usr/libexec/podman").join(binary).exists(),
            &format!("{binary} in PATH (apt-get install {package}; tools/setup installs it)"),
        );
    }
    need(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox (apt-get install busybox-static)",
    );
}

/// Runs `command`, panicking with `what` if it cannot be started.
fn output(mut command: Command, what: &str) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"))
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): stdout: {} stderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Unmounts everything mounted at or below `dir` (deepest first), then removes it.
pub fn remove_tree(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let mut targets: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|t| t == &prefix || t.starts_with(&format!("{prefix}/")))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    targets.dedup();
    for target in targets {
        let _ = nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Removes directories `/tmp/<prefix><pid>...` left by test processes that are gone.
fn remove_stale(prefix: &str) {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let pid: Option<i64> = rest.split('-').next().and_then(|p| p.parse().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() as i64 && !alive(pid) {
                remove_tree(&entry.path());
            }
        }
    }
}

/// Builds the busybox root filesystem of the image under `dir/rootfs`.
fn build_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("image directories");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copying /bin/busybox");
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet)).expect("applet link");
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("etc/passwd");
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("etc/group");
    rootfs
}

/// podman's private storage, shared by the tests of one binary: made, and the image
/// imported, by the first test that asks; removed when the test binary exits.
pub struct PodmanStore {
    pub dir: PathBuf,
    pub conf: PathBuf,
    /// The image as an OCI archive, for containerd.
    pub archive: PathBuf,
}

static STORE: OnceLock<PodmanStore> = OnceLock::new();

const STORE_PREFIX: &str = "ward-e2e-podman-";

extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

/// At the test binary's exit: every container of the private storage is removed (podman
/// stops them through the runtime), then the storage itself.
extern "C" fn remove_store() {
    if let Some(store) = STORE.get() {
        let mut rm = store.podman_base();
        rm.args(["rm", "--all", "--force", "--time", "0"]);
        let _ = rm.stdin(Stdio::null()).output();
        remove_tree(&store.dir);
    }
}

impl PodmanStore {
    pub fn get() -> &'static PodmanStore {
        STORE.get_or_init(|| {
            need_engines();
            remove_stale(STORE_PREFIX);
            let dir = PathBuf::from(format!("/tmp/{STORE_PREFIX}{}", std::process::id()));
            remove_tree(&dir);
            std::fs::create_dir_all(&dir).expect("podman test directory");
            let conf = dir.join("containers.conf");
            // Networks the tests create stay in the private directory, not /etc/cni.
            let networks = dir.join("networks");
            std::fs::create_dir_all(&networks).expect("podman network directory");
            std::fs::write(
                &conf,
                format!(
                    "{CONTAINERS_CONF}[network]\nnetwork_config_dir = \"{}\"\n",
                    networks.display()
                ),
            )
            .expect("containers.conf");
            let store = PodmanStore {
                archive: dir.join("image.tar"),
                dir,
                conf,
            };
            // SAFETY: registers a plain function; it runs once, at exit.
            unsafe { atexit(remove_store) };
            store.import_image();
            store
        })
    }

    /// `podman` with the private storage and configuration, and no runtime chosen.
    pub fn podman_base(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", &self.conf)
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"));
        command
    }

    fn import_image(&self) {
        let rootfs = build_rootfs(&self.dir);
        let tar = self.dir.join("rootfs.tar");
        let out = output(
            {
                let mut c = Command::new("tar");
                c.arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".");
                c
            },
            "tar",
        );
        check(&out, "tar of the image's root filesystem");
        let mut import = self.podman_base();
        import.arg("import").arg(&tar).arg(IMAGE);
        check(&output(import, "podman import"), "podman import");
        let mut save = self.podman_base();
        save.args(["save", "--format", "oci-archive", "-o"])
            .arg(&self.archive)
            .arg(IMAGE);
        check(&output(save, "podman save"), "podman save");
    }
}

/// podman with the private storage and a chosen OCI runtime.
pub struct Podman {
    pub store: &'static PodmanStore,
    pub runtime: PathBuf,
    /// `--runtime-flag` values: podman passes them to the runtime as `--FLAG`.
    pub runtime_flags: Vec<String>,
}

impl Podman {
    /// podman running ward (from [`crate::Ward`]), its configuration passed with the global
    /// `--config` flag: conmon passes no environment to the runtime.
    pub fn with_ward(ward: &crate::Ward) -> Podman {
        Podman::with_runtime(
            &ward.bin,
            &[format!("config={}", absolute(&ward.config).display())],
        )
    }

    pub fn with_runtime(runtime: &Path, runtime_flags: &[String]) -> Podman {
        Podman {
            store: PodmanStore::get(),
            runtime: runtime.to_path_buf(),
            runtime_flags: runtime_flags.to_vec(),
        }
    }

    /// `podman` with the private storage and the runtime.
    pub fn command(&self) -> Command {
        let mut command = self.store.podman_base();
        command.arg("--runtime").arg(&self.runtime);
        for flag in &self.runtime_flags {
            command.arg("--runtime-flag").arg(flag);
        }
        command
    }

    /// The command line of [`Podman::command`], for a shell.
    pub fn shell_line(&self) -> String {
        let command = self.command();
        let mut line = String::from("env");
        for (k, v) in command.get_envs() {
            if let Some(v) = v {
                line.push_str(&format!(" {}={}", k.to_string_lossy(), v.to_string_lossy()));
            }
        }
        line.push_str(" podman");
        for arg in command.get_args() {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }

    /// Runs `podman ARGS` to completion with stdin closed.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command();
        command.args(args);
        output(command, &format!("podman {}", args.join(" ")))
    }

    /// Runs `podman ARGS`, asserting success; returns its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        check(&out, &format!("podman {}", args.join(" ")));
        text(&out.stdout).trim().to_string()
    }

    /// `podman inspect -f FORMAT NAME`.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name])
    }

    /// Polls `{{.State.Status}}` until it is `want`.
    pub fn wait_status(&self, name: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.inspect(name, "{{.State.Status}}");
            if status == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "podman container {name} did not become {want} within {timeout:?}: {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().expect("cwd").join(path)
    }
}

/// A private containerd daemon, stopped and removed on drop with everything it started.
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub namespace: String,
    /// The runtime its runc shim runs (`ctr run --runc-binary`).
    pub runtime: PathBuf,
    daemon: Child,
}

const CONTAINERD_PREFIX: &str = "ward-e2e-ctd-";

/// Serializes the start of private containerds: two starting at once on two cores and a
/// loaded machine can miss the start deadline; once up, they run side by side.
static CONTAINERD_START: Mutex<()> = Mutex::new(());

impl Containerd {
    /// Starts a private containerd whose shims run `runtime`, with `env` in the daemon's
    /// (and so the shim's and the runtime's) environment, and imports the image.
    pub fn start(runtime: &Path, env: &[(&str, &Path)]) -> Containerd {
        need_engines();
        let store = PodmanStore::get();
        let _guard = CONTAINERD_START.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale(CONTAINERD_PREFIX);
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = PathBuf::from(format!(
            "/tmp/{CONTAINERD_PREFIX}{}-{n}",
            std::process::id()
        ));
        remove_tree(&dir);
        std::fs::create_dir_all(&dir).expect("containerd test directory");
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{socket}\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
                socket = socket.display(),
            ),
        )
        .expect("containerd configuration");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let mut command = Command::new("containerd");
        command
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let daemon = command.spawn().expect("starting containerd");
        let containerd = Containerd {
            namespace: format!("ward-e2e-{}-{n}", std::process::id()),
            dir,
            socket,
            runtime: runtime.to_path_buf(),
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if containerd.socket.exists() && containerd.ctr(&["version"]).status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer on {} within 30 s; its log: {}",
                containerd.socket.display(),
                std::fs::read_to_string(containerd.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let archive = store.archive.to_str().expect("UTF-8 path");
        containerd.ok(&[
            "images",
            "import",
            "--base-name",
            "localhost/ward-busybox",
            "--digests",
            archive,
        ]);
        containerd
    }

    /// A private containerd running ward (from [`crate::Ward`]): the shim inherits
    /// containerd's environment, so WARD_CONFIG set there reaches ward.
    pub fn with_ward(ward: &crate::Ward) -> Containerd {
        let config = absolute(&ward.config);
        Containerd::start(&ward.bin, &[("WARD_CONFIG", &config)])
    }

    /// A private containerd whose `io.containerd.ward.v2` runtime is ward's own shim: the
    /// shim binary is found next to ward (`containerd-shim-ward-v2`, built by the same
    /// `cargo build`) through containerd's PATH, which containerd's shims inherit along
    /// with WARD_CONFIG, as in a real install (/usr/local/bin, /etc/ward).
    pub fn with_ward_shim(ward: &crate::Ward) -> Containerd {
        Containerd::with_ward_shim_env(ward, true)
    }

    /// [`Containerd::with_ward_shim`], with WARD_CONFIG left out of containerd's
    /// environment when `config_env` is false (the runtime options name the file then).
    pub fn with_ward_shim_env(ward: &crate::Ward, config_env: bool) -> Containerd {
        let shim = ward_shim_binary(ward);
        need_shim(&shim);
        let config = absolute(&ward.config);
        let dir = absolute(shim.parent().expect("the shim binary has a directory"));
        let path = match std::env::var_os("PATH") {
            Some(rest) => {
                let mut joined = dir.into_os_string();
                joined.push(":");
                joined.push(rest);
                PathBuf::from(joined)
            }
            None => dir,
        };
        if config_env {
            Containerd::start(&ward.bin, &[("WARD_CONFIG", &config), ("PATH", &path)])
        } else {
            Containerd::start(&ward.bin, &[("PATH", &path)])
        }
    }

    /// `ctr run --runtime io.containerd.ward.v2 OPTS IMAGE ID ARGS`.
    pub fn run_shim(&self, opts: &[&str], id: &str, args: &[&str]) -> Output {
        let mut command = self.command();
        command
            .arg("run")
            .arg("--runtime")
            .arg(WARD_SHIM_RUNTIME)
            .args(opts)
            .arg(IMAGE)
            .arg(id)
            .args(args);
        output(
            command,
            &format!("ctr run --runtime {WARD_SHIM_RUNTIME} {id}"),
        )
    }

    /// [`Containerd::run_shim`] with `input` on ctr's stdin (closed after it).
    pub fn run_shim_with_stdin(
        &self,
        opts: &[&str],
        id: &str,
        args: &[&str],
        input: &[u8],
    ) -> Output {
        use std::io::Write;
        let mut command = self.command();
        command
            .arg("run")
            .arg("--runtime")
            .arg(WARD_SHIM_RUNTIME)
            .args(opts)
            .arg(IMAGE)
            .arg(id)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting ctr run");
        let mut stdin = child.stdin.take().expect("ctr's stdin");
        stdin.write_all(input).expect("writing ctr's stdin");
        drop(stdin);
        child.wait_with_output().expect("waiting for ctr run")
    }

    /// Where ward's shim keeps the state of this daemon's namespace.
    pub fn shim_root(&self) -> PathBuf {
        Path::new("/run/ward-shim").join(&self.namespace)
    }

    /// Moves to namespace `namespace` (importing the image there): containerd's CRI plugin
    /// works in `k8s.io`, and the runc shim keeps the runtime's state under
    /// /run/containerd/runc/<namespace>.
    pub fn use_namespace(&mut self, namespace: &str) {
        self.namespace = namespace.to_string();
        let archive = PodmanStore::get()
            .archive
            .to_str()
            .expect("UTF-8 path")
            .to_string();
        self.ok(&[
            "images",
            "import",
            "--base-name",
            "localhost/ward-busybox",
            "--digests",
            &archive,
        ]);
    }

    /// `ctr` talking to this daemon, in its namespace.
    pub fn command(&self) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(&self.namespace);
        command
    }

    /// Runs `ctr ARGS` to completion with stdin closed.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut command = self.command();
        command.args(args);
        output(command, &format!("ctr {}", args.join(" ")))
    }

    /// Runs `ctr ARGS`, asserting success; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        check(&out, &format!("ctr {}", args.join(" ")));
        text(&out.stdout)
    }

    /// `ctr run --runc-binary RUNTIME OPTS IMAGE ID ARGS`.
    pub fn run(&self, opts: &[&str], id: &str, args: &[&str]) -> Output {
        let mut command = self.command();
        command
            .arg("run")
            .arg("--runc-binary")
            .arg(&self.runtime)
            .args(opts)
            .arg(IMAGE)
            .arg(id)
            .args(args);
        output(command, &format!("ctr run {id}"))
    }

    /// The first column of `ctr task ls` / `ctr c ls` (the IDs).
    pub fn ids(&self, what: &str) -> Vec<String> {
        self.ok(&[what, "ls", "--quiet"])
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The status column of `ctr task ls` for `id`.
    pub fn task_status(&self, id: &str) -> Option<String> {
        self.ok(&["task", "ls"]).lines().skip(1).find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.last().unwrap_or(&"").to_string())
        })
    }

    /// Polls `ctr task ls` until `id`'s status is `want`.
    pub fn wait_task(&self, id: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.task_status(id);
            if status.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} did not become {want} within {timeout:?}: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The runtime state directory the shim passes to the runtime as `--root`.
    pub fn runtime_root(&self) -> PathBuf {
        Path::new("/run/containerd/runc").join(&self.namespace)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Containers a failed test left: killed and removed through containerd first.
        if let Ok(out) = self.command().args(["task", "ls", "--quiet"]).output() {
            for id in text(&out.stdout).split_whitespace() {
                let _ = self
                    .command()
                    .args(["task", "kill", "--signal", "SIGKILL", id])
                    .output();
                let _ = self
                    .command()
                    .args(["task", "delete", "--force", id])
                    .output();
            }
        }
        if let Ok(out) = self.command().args(["container", "ls", "--quiet"]).output() {
            for id in text(&out.stdout).split_whitespace() {
                let _ = self.command().args(["container", "rm", id]).output();
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Shims outlive containerd by design: they name its socket on their command line.
        for pid in pids_mentioning(&self.socket.to_string_lossy()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Whatever the runtime still holds in the runc shim's runtime root, and what
        // ward's own shim left (its store has the CLI's layout, so `delete --force` works).
        for root in [self.runtime_root(), self.shim_root()] {
            if let Ok(entries) = std::fs::read_dir(&root) {
                for entry in entries.flatten() {
                    let _ = Command::new(&self.runtime)
                        .arg("--root")
                        .arg(&root)
                        .args(["delete", "--force"])
                        .arg(entry.file_name())
                        .stdin(Stdio::null())
                        .output();
                }
            }
            let _ = std::fs::remove_dir_all(&root);
        }
        remove_tree(&self.dir);
    }
}

/// The runtime type of ward's containerd shim.
pub const WARD_SHIM_RUNTIME: &str = "io.containerd.ward.v2";

/// ward's shim binary: WARD_SHIM_BIN, else next to the ward binary.
pub fn ward_shim_binary(ward: &crate::Ward) -> PathBuf {
    std::env::var_os("WARD_SHIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| ward.bin.with_file_name("containerd-shim-ward-v2"))
}

fn need_shim(shim: &Path) {
    need(
        shim.file_name().and_then(|n| n.to_str()) == Some("containerd-shim-ward-v2")
            && shim.exists(),
        &format!(
            "ward's shim at {} (cargo build -p ward-runtime builds it; WARD_SHIM_BIN names \
             another, which must keep the name containerd-shim-ward-v2)",
            shim.display()
        ),
    );
}

/// Processes started as ward's shim for containerd namespace `namespace`, each as
/// "PID COMM: CMDLINE": the shims themselves (comm `containerd-shim`, truncated by the
/// kernel) and the forked copies the library keeps as watchers (comm `ward-watch`).
pub fn shim_processes(namespace: &str) -> Vec<String> {
    pids_mentioning(namespace)
        .into_iter()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| text(&c).replace('\0', " "))
                .ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            cmdline
                .contains("containerd-shim-ward-v2")
                .then(|| format!("{pid} {}: {cmdline}", comm.trim()))
        })
        .collect()
}

/// A tmux server of its own, for driving a program through a real pseudo-terminal;
/// killed on drop.
pub struct Tmux {
    pub socket: PathBuf,
}

impl Tmux {
    /// Starts `shell_command` in a detached session `s` of a `cols`x`rows` window.
    pub fn start(name: &str, cols: u16, rows: u16, shell_command: &str) -> Tmux {
        let socket = PathBuf::from(format!("/tmp/ward-e2e-tmux-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let tmux = Tmux { socket };
        let out = tmux
            .command()
            .args(["new-session", "-d", "-s", "s", "-x"])
            .arg(cols.to_string())
            .arg("-y")
            .arg(rows.to_string())
            .arg(shell_command)
            .stdin(Stdio::null())
            .output()
            .expect("running tmux");
        check(&out, "tmux new-session");
        tmux
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .env("TERM", "xterm")
            .arg("-f")
            .arg("/dev/null")
            .arg("-S")
            .arg(&self.socket);
        command
    }

    /// Types `keys` literally, then Enter.
    pub fn type_line(&self, keys: &str) {
        let out = self
            .command()
            .args(["send-keys", "-t", "s", "-l", keys])
            .output()
            .expect("tmux send-keys");
        check(&out, "tmux send-keys");
        let out = self
            .command()
            .args(["send-keys", "-t", "s", "Enter"])
            .output()
            .expect("tmux send-keys");
        check(&out, "tmux send-keys Enter");
    }

    /// The pane's text, with its scrollback.
    pub fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-J", "-S", "-200", "-t", "s"])
            .output()
            .expect("tmux capture-pane");
        text(&out.stdout)
    }

    /// Polls the pane until it contains `needle`; returns the screen.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal did not show {needle:?} within {timeout:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Host processes that mention any of `needles` and look like ward's: the VMM, the vsock
/// device, the relay.
pub fn ward_processes_mentioning(needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for needle in needles {
        for pid in pids_mentioning(needle) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| text(&c).replace('\0', " "))
                .unwrap_or_default();
            if ["qemu-system", "vhost-device-vsock", "ward"]
                .iter()
                .any(|w| cmdline.contains(w))
            {
                found.push(format!("{pid}: {cmdline}"));
            }
        }
    }
    found
}

/// The host directory of sandbox `id` of `--root` `root` (its VM's sockets, console and
/// shared directory): the VMM and the helpers of its VM (vsock device, file server) name
/// it on their command lines.
pub fn sandbox_dir(root: &Path, id: &str) -> PathBuf {
    ward_runtime::sandbox::store::SandboxStore::new(root).dir(id)
}

/// Asserts, for up to 10 s, that no host process of sandbox `id` of `root` is left and
/// that its directory is gone.
pub fn assert_sandbox_gone(root: &Path, id: &str) {
    let dir = sandbox_dir(root, id);
    let dir_text = dir.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = ward_processes_mentioning(&[&dir_text]);
        if left.is_empty() && !dir.exists() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sandbox {id} of {} remains: directory {} exists: {}; processes: {left:#?}",
            root.display(),
            dir.display(),
            dir.exists()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The repository's tests/contracts directory.
pub fn contracts_dir() -> PathBuf {
    repo_root().join("tests/contracts")
}

/// Debian's docker (docker.io 20.10), named by path: another docker may come first in PATH.
pub const DOCKER: &str = "/usr/bin/docker";
pub const DOCKERD: &str = "/usr/sbin/dockerd";

/// Asserts what the docker tests need besides [`need_engines`]: Debian's docker 20.10.
pub fn need_docker() {
    need_engines();
    need(
        Path::new(DOCKER).exists() && Path::new(DOCKERD).exists(),
        "Debian's docker at /usr/bin/docker and /usr/sbin/dockerd (apt-get install --no-install-recommends docker.io; tools/setup installs it)",
    );
    let version = Command::new(DOCKERD)
        .arg("--version")
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default();
    need(
        version.contains("version 20.10"),
        &format!("dockerd 20.10 at {DOCKERD} (Debian's docker.io), found: {version:?}"),
    );
}

const DOCKER_PREFIX: &str = "ward-e2e-docker-";

/// A private dockerd, stopped and removed on drop with everything it started.
///
/// It has its own data root, exec root, pidfile, socket and daemon.json, and starts its own
/// containerd under its exec root. It touches no host network: no bridge, no iptables, no
/// IP forwarding or masquerading; containers run with `--network none`. Its one runtime
/// besides runc is `ward`, run by the runc shim (io.containerd.runc.v2) as its runc binary,
/// with `--config` from `runtimeArgs` (dockerd writes a wrapper script for that).
pub struct Docker {
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The docker CLI's own configuration directory (no host contexts or credentials).
    pub client_config: PathBuf,
    /// The runtime that `--runtime ward` runs.
    pub runtime: PathBuf,
    daemon: Child,
    /// The bridge this dockerd attaches containers to, made for it and removed with it.
    bridge: Option<String>,
}

/// A private dockerd's network: none (`--bridge=none`), or its own bridge with this
/// host address (`10.124.N.1/24`, a bridge made for the test) and the userland proxy for
/// published ports: no iptables rule is made on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerNetwork {
    None,
    Bridge { subnet: u8 },
}

/// Serializes the start of private dockerds (as [`CONTAINERD_START`] does for containerd).
static DOCKER_START: Mutex<()> = Mutex::new(());

impl Docker {
    /// Starts a private dockerd whose runtime `ward` is `runtime` with `runtime_args`, and
    /// loads the test image into it.
    pub fn start(runtime: &Path, runtime_args: &[String]) -> Docker {
        Docker::start_with(runtime, runtime_args, DockerNetwork::None)
    }

    /// [`Docker::start`] with the network `network`.
    pub fn start_with(runtime: &Path, runtime_args: &[String], network: DockerNetwork) -> Docker {
        need_docker();
        let store = PodmanStore::get();
        let _guard = DOCKER_START.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale(DOCKER_PREFIX);
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/{DOCKER_PREFIX}{}-{n}", std::process::id()));
        remove_tree(&dir);
        std::fs::create_dir_all(&dir).expect("docker test directory");
        let socket = dir.join("docker.sock");
        let client_config = dir.join("client");
        std::fs::create_dir_all(&client_config).expect("docker client configuration");
        let config = dir.join("daemon.json");
        // The trust key too lives here, not in /etc/docker.
        let daemon_json = serde_json::json!({
            "deprecated-key-path": dir.join("key.json"),
            "runtimes": {
                "ward": {
                    "path": runtime,
                    "runtimeArgs": runtime_args,
                }
            }
        });
        std::fs::write(&config, daemon_json.to_string()).expect("daemon.json");
        let log = std::fs::File::create(dir.join("dockerd.log")).expect("dockerd log");
        let mut command = Command::new(DOCKERD);
        command
            .arg("--config-file")
            .arg(&config)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--storage-driver=vfs",
                "--log-level=debug",
            ])
            .env_remove("DOCKER_HOST")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let bridge = match network {
            DockerNetwork::None => {
                command.args(["--bridge=none", "--userland-proxy=false"]);
                None
            }
            DockerNetwork::Bridge { subnet } => {
                let name = format!("wardbr{subnet}");
                let _ = Command::new("ip").args(["link", "del", &name]).output();
                let script = format!(
                    "ip link add {name} type bridge && \
                     ip addr add 10.124.{subnet}.1/24 dev {name} && ip link set {name} up"
                );
                let out = output(
                    {
                        let mut c = Command::new("sh");
                        c.args(["-c", &script]);
                        c
                    },
                    "making the docker test bridge",
                );
                check(&out, &script);
                command
                    .arg(format!("--bridge={name}"))
                    .arg("--userland-proxy=true");
                Some(name)
            }
        };
        let daemon = command.spawn().expect("starting dockerd");
        let docker = Docker {
            dir,
            socket,
            client_config,
            runtime: runtime.to_path_buf(),
            daemon,
            bridge,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if docker.socket.exists() && docker.docker(&["version"]).status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer on {} within 60 s; its log: {}",
                docker.socket.display(),
                docker.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // docker 20.10 loads docker archives (not OCI ones): the image saved again as one.
        let archive = docker.dir.join("image-docker.tar");
        let mut save = store.podman_base();
        save.args(["save", "--format", "docker-archive", "-o"])
            .arg(&archive)
            .arg(IMAGE);
        check(
            &output(save, "podman save"),
            "podman save --format docker-archive",
        );
        docker.ok(&["load", "--input", archive.to_str().expect("UTF-8 path")]);
        docker
    }

    /// A private dockerd running ward (from [`crate::Ward`]) as runtime `ward`.
    pub fn with_ward(ward: &crate::Ward) -> Docker {
        Docker::with_ward_on(ward, DockerNetwork::None)
    }

    /// A private dockerd running ward as runtime `ward`, on network `network`.
    pub fn with_ward_on(ward: &crate::Ward, network: DockerNetwork) -> Docker {
        let config = absolute(&ward.config);
        Docker::start_with(
            &absolute(&ward.bin),
            &[format!("--config={}", config.display())],
            network,
        )
    }

    /// The last 30 lines of dockerd's log (and of its containerd's, which it copies) that
    /// are not debug messages.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("level=debug")).collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `docker` talking to this daemon.
    pub fn command(&self) -> Command {
        let mut command = Command::new(DOCKER);
        command
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .arg("--config")
            .arg(&self.client_config)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()));
        command
    }

    /// Runs `docker ARGS` to completion with stdin closed.
    pub fn docker(&self, args: &[&str]) -> Output {
        let mut command = self.command();
        command.args(args);
        output(command, &format!("docker {}", args.join(" ")))
    }

    /// Runs `docker ARGS`, asserting success; returns its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        check(&out, &format!("docker {}", args.join(" ")));
        text(&out.stdout).trim().to_string()
    }

    /// `docker run --runtime ward --network none OPTS IMAGE ARGS`.
    pub fn run(&self, opts: &[&str], args: &[&str]) -> Output {
        let mut command = self.command();
        command
            .args(["run", "--runtime", "ward", "--network", "none"])
            .args(opts)
            .arg(IMAGE)
            .args(args);
        output(command, "docker run")
    }

    /// `docker inspect --format FORMAT NAME`.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name])
    }

    /// Polls `{{.State.Status}}` until it is `want`.
    pub fn wait_status(&self, name: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.inspect(name, "{{.State.Status}}");
            if status == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "docker container {name} did not become {want} within {timeout:?}: {status}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The directory the runc shim passes to the runtime as `--root`: dockerd 20.10's
    /// `<exec-root>/runtime-runc` for every runtime, then the containerd namespace `moby`.
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.join("exec/runtime-runc/moby")
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        // Containers a failed test left: removed through docker first.
        if let Ok(out) = self.command().args(["ps", "--all", "--quiet"]).output() {
            for id in text(&out.stdout).split_whitespace() {
                let _ = self.command().args(["rm", "--force", id]).output();
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Whatever the runtime still holds in the shim's runtime root.
        let root = self.runtime_root();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let _ = Command::new(&self.runtime)
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "--force"])
                    .arg(entry.file_name())
                    .stdin(Stdio::null())
                    .output();
            }
        }
        // dockerd's containerd and the shims name the private directory on their command
        // lines; they outlive dockerd when it dies uncleanly.
        for pid in pids_mentioning(&self.dir.to_string_lossy()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        remove_tree(&self.dir);
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip").args(["link", "del", bridge]).output();
        }
    }
}

/// The pause image of the CRI tests: a static catatonit as `catatonit -P` (pause mode).
pub const PAUSE_IMAGE: &str = "localhost/ward-pause:test";

/// The CRI runtime handler that runs ward: containerd's `runtime_type` for it names ward's
/// shim (`containerd-shim-ward-v2`, found next to the ward binary).
pub const WARD_HANDLER: &str = "ward";
/// The CRI runtime handler of the baseline: runc through containerd's runc shim.
pub const RUNC_HANDLER: &str = "runc";

/// Asserts what the CRI tests need besides [`need_engines`].
pub fn need_cri() {
    need_engines();
    need(
        Path::new("/usr/bin/catatonit").exists(),
        "/usr/bin/catatonit, the pause image's process (apt-get install catatonit; tools/setup installs it)",
    );
    for plugin in ["bridge", "host-local", "loopback"] {
        need(
            Path::new("/usr/lib/cni").join(plugin).exists(),
            &format!("the CNI plugin /usr/lib/cni/{plugin} (apt-get install containernetworking-plugins)"),
        );
    }
    for (binary, package) in [("unshare", "util-linux"), ("ip", "iproute2")] {
        need(
            which(binary),
            &format!("{binary} in PATH (apt-get install {package})"),
        );
    }
}

/// The pause image as an OCI archive, made once per test binary in the podman storage.
fn pause_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let store = PodmanStore::get();
        let dir = store.dir.join("pause");
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).expect("pause image directory");
        std::fs::copy("/usr/bin/catatonit", rootfs.join("catatonit")).expect("copying catatonit");
        let tar = dir.join("rootfs.tar");
        let mut command = Command::new("tar");
        command.arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".");
        check(&output(command, "tar"), "tar of the pause image");
        let mut import = store.podman_base();
        import
            .args(["import", "--change", r#"ENTRYPOINT ["/catatonit", "-P"]"#])
            .arg(&tar)
            .arg(PAUSE_IMAGE);
        check(&output(import, "podman import"), "podman import (pause)");
        let archive = dir.join("pause.tar");
        let mut save = store.podman_base();
        save.args(["save", "--format", "oci-archive", "-o"])
            .arg(&archive)
            .arg(PAUSE_IMAGE);
        check(&output(save, "podman save"), "podman save (pause)");
        archive
    })
}

const CRI_PREFIX: &str = "ward-e2e-cri-";

/// A private containerd with its CRI plugin, stopped and removed on drop with everything it
/// started.
///
/// It runs in a network namespace of its own (with only loopback up), so the CNI bridge it
/// makes for pods, the pods' addresses and its stream server stay out of the host's network.
/// Its CNI configuration (a bridge on a private subnet, host-local addresses kept under its
/// directory) and its pods' network namespaces (`netns_mounts_under_state_dir`) live under
/// its directory too. Runtime handlers: `runc` (the runc shim, with its own runc root) and,
/// when given a ward, `ward` (ward's shim, found next to the ward binary through
/// containerd's PATH, with the ward's configuration as the runtime's `ConfigPath` option
/// and as WARD_CONFIG in containerd's environment).
/// The busybox image and the pause image are imported into its `k8s.io` namespace.
pub struct CriContainerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    daemon: Child,
}

impl CriContainerd {
    /// The containerd namespace of CRI.
    pub const NAMESPACE: &'static str = "k8s.io";

    pub fn start(ward: Option<&crate::Ward>) -> CriContainerd {
        need_cri();
        let store = PodmanStore::get();
        let pause = pause_archive();
        let _guard = CONTAINERD_START.lock().unwrap_or_else(|e| e.into_inner());
        remove_stale(CRI_PREFIX);
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/{CRI_PREFIX}{}-{n}", std::process::id()));
        remove_tree(&dir);
        let cni = dir.join("cni");
        std::fs::create_dir_all(&cni).expect("CNI configuration directory");
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "ward-e2e",
            "plugins": [{
                "type": "bridge",
                "bridge": "wardcri0",
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.231.0.0/24"}]],
                    "dataDir": dir.join("cni-ipam"),
                },
            }],
        });
        std::fs::write(cni.join("10-ward-e2e.conflist"), conflist.to_string())
            .expect("CNI configuration");

        let socket = dir.join("containerd.sock");
        let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
        let mut path = None;
        let mut config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             [grpc]\n  address = \"{socket}\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n\
             [{cri}]\n  sandbox_image = \"{PAUSE_IMAGE}\"\n  netns_mounts_under_state_dir = true\n  \
             stream_server_address = \"127.0.0.1\"\n  stream_server_port = \"0\"\n  \
             disable_apparmor = true\n  restrict_oom_score_adj = true\n\
             [{cri}.cni]\n  bin_dir = \"/usr/lib/cni\"\n  conf_dir = \"{cni}\"\n  max_conf_num = 1\n\
             [{cri}.containerd]\n  default_runtime_name = \"{RUNC_HANDLER}\"\n  snapshotter = \"overlayfs\"\n\
             [{cri}.containerd.runtimes.{RUNC_HANDLER}]\n  runtime_type = \"io.containerd.runc.v2\"\n\
             [{cri}.containerd.runtimes.{RUNC_HANDLER}.options]\n  Root = \"{runc_root}\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            socket = socket.display(),
            opt = dir.join("opt").display(),
            cni = cni.display(),
            runc_root = dir.join("runc").display(),
        );
        if let Some(ward) = ward {
            let shim = absolute(&ward.bin)
                .parent()
                .expect("the ward binary's directory")
                .join("containerd-shim-ward-v2");
            need(
                shim.exists(),
                &format!(
                    "ward's shim {} (built with ward: `make build`)",
                    shim.display()
                ),
            );
            // ward's configuration as a kubelet's node would name it: the runtime's
            // ConfigPath option, which containerd hands to the shim.
            config.push_str(&format!(
                "[{cri}.containerd.runtimes.{WARD_HANDLER}]\n  runtime_type = \"io.containerd.ward.v2\"\n\
                 [{cri}.containerd.runtimes.{WARD_HANDLER}.options]\n  ConfigPath = \"{}\"\n",
                absolute(&ward.config).display()
            ));
            // containerd 1.6 finds a shim by its runtime type's binary name in its PATH
            // (its runtime_path setting does not reach the shim's start).
            let dir = shim.parent().expect("the shim's directory").to_path_buf();
            let mut paths = vec![dir];
            paths.extend(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            ));
            path = Some(std::env::join_paths(paths).expect("PATH"));
        }
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, config).expect("containerd configuration");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        // A network namespace of its own, loopback up; containerd is exec'd, so the child's
        // PID is containerd's.
        let mut command = Command::new("unshare");
        command
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec containerd --config \"$0\"",
            ])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // ward's configuration also in the environment the shim inherits, where the runc
        // shim's ward finds it; both name the same file.
        command.env_remove("WARD_CONFIG");
        if let Some(ward) = ward {
            command.env("WARD_CONFIG", absolute(&ward.config));
        }
        if let Some(path) = &path {
            command.env("PATH", path);
        }
        let daemon = command.spawn().expect("starting containerd");
        let containerd = CriContainerd {
            dir,
            socket,
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if containerd.socket.exists() && containerd.ctr(&["version"]).status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd (CRI) did not answer on {} within 30 s; its log: {}",
                containerd.socket.display(),
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for (archive, base) in [
            (store.archive.as_path(), "localhost/ward-busybox"),
            (pause, "localhost/ward-pause"),
        ] {
            let out = containerd.ctr(&[
                "images",
                "import",
                "--base-name",
                base,
                "--digests",
                archive.to_str().expect("UTF-8 path"),
            ]);
            check(&out, "ctr images import");
        }
        containerd
    }

    /// The last 40 lines of containerd's log.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Runs `ctr ARGS` against this daemon in CRI's namespace, to completion.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(Self::NAMESPACE)
            .args(args);
        output(command, &format!("ctr {}", args.join(" ")))
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        // What a failed test left: tasks killed and deleted through containerd (each shim
        // ends its VM or containers), then containers removed.
        let tasks = text(&self.ctr(&["task", "ls", "--quiet"]).stdout);
        for id in tasks.split_whitespace() {
            let _ = self.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
        }
        for id in tasks.split_whitespace() {
            let _ = self.ctr(&["task", "delete", "--force", id]);
        }
        let containers = text(&self.ctr(&["container", "ls", "--quiet"]).stdout);
        for id in containers.split_whitespace() {
            let _ = self.ctr(&["container", "rm", id]);
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Shims name containerd's socket on their command line.
        for pid in pids_mentioning(&self.socket.to_string_lossy()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        remove_tree(&self.dir);
    }
}
