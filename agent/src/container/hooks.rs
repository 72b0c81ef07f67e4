//! createContainer and startContainer hooks (runtime-spec 1.1): run by the container's
//! init in the container's namespaces, createContainer after pivot_root and
//! startContainer right before the program's exec, their paths resolved in the
//! container's root. The host runs the other stages.
//!
//! `plan` is pure and runs in the agent; `run` runs in the forked init (fork-safety rules
//! of `spawn`: no logging, errors returned as text for the report pipe).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::{Hook, Hooks};
use serde::Serialize;
use thiserror::Error;

/// Most hooks one stage may list.
const MAX_HOOKS: usize = 64;
/// What is kept of a failing hook's output for the error message.
const OUTPUT_LIMIT: usize = 4096;
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HookError {
    #[error("{stage} has {count} hooks, at most {MAX_HOOKS} are accepted")]
    TooMany { stage: &'static str, count: usize },
    #[error("{stage} hook #{index}: path {path:?} is not absolute")]
    RelativePath {
        stage: &'static str,
        index: usize,
        path: String,
    },
    #[error("{stage} hook #{index}: timeout {timeout} is not a positive number of seconds")]
    BadTimeout {
        stage: &'static str,
        index: usize,
        timeout: i64,
    },
    #[error("{stage} hook #{index}: its path, args or env contain a NUL byte")]
    Nul { stage: &'static str, index: usize },
}

/// One hook, ready for execve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookPlan {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub timeout: Option<Duration>,
}

/// The guest's hooks of one container and what their state says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestHooks {
    pub create_container: Vec<HookPlan>,
    pub start_container: Vec<HookPlan>,
    pub id: String,
    /// The bundle as the guest sees it: the directory of the container's rootfs (host
    /// paths mean nothing in the guest).
    pub bundle: String,
    pub annotations: HashMap<String, String>,
}

/// The OCI state document a hook reads on stdin.
#[derive(Serialize)]
struct State<'a> {
    #[serde(rename = "ociVersion")]
    oci_version: &'a str,
    id: &'a str,
    status: &'a str,
    pid: i32,
    bundle: &'a str,
    annotations: &'a HashMap<String, String>,
}

fn plan_stage(stage: &'static str, hooks: Option<&Vec<Hook>>) -> Result<Vec<HookPlan>, HookError> {
    let hooks = hooks.map(Vec::as_slice).unwrap_or(&[]);
    if hooks.len() > MAX_HOOKS {
        return Err(HookError::TooMany {
            stage,
            count: hooks.len(),
        });
    }
    hooks
        .iter()
        .enumerate()
        .map(|(index, hook)| {
            if !hook.path().is_absolute() {
                return Err(HookError::RelativePath {
                    stage,
                    index,
                    path: hook.path().display().to_string(),
                });
            }
            let timeout = match hook.timeout() {
                None => None,
                Some(secs) if secs > 0 => Some(Duration::from_secs(secs.unsigned_abs())),
                Some(timeout) => {
                    return Err(HookError::BadTimeout {
                        stage,
                        index,
                        timeout,
                    })
                }
            };
            let nul = |_| HookError::Nul { stage, index };
            let cstrings = |list: &Option<Vec<String>>| {
                list.iter()
                    .flatten()
                    .map(|s| CString::new(s.as_bytes()).map_err(nul))
                    .collect::<Result<Vec<_>, _>>()
            };
            let path = CString::new(hook.path().as_os_str().as_encoded_bytes()).map_err(nul)?;
            let mut argv = cstrings(hook.args())?;
            // execve needs an argv[0]: the path, as a shell would give it.
            if argv.is_empty() {
                argv.push(path.clone());
            }
            Ok(HookPlan {
                path,
                argv,
                envp: cstrings(hook.env())?,
                timeout,
            })
        })
        .collect()
}

/// The guest's stages of `hooks`; `rootfs` is the container's root in the guest.
pub fn plan(
    hooks: Option<&Hooks>,
    id: &str,
    rootfs: &std::path::Path,
    annotations: HashMap<String, String>,
) -> Result<GuestHooks, HookError> {
    Ok(GuestHooks {
        create_container: plan_stage(
            "createContainer",
            hooks.and_then(|h| h.create_container().as_ref()),
        )?,
        start_container: plan_stage(
            "startContainer",
            hooks.and_then(|h| h.start_container().as_ref()),
        )?,
        id: id.to_string(),
        bundle: rootfs
            .parent()
            .unwrap_or(rootfs)
            .to_string_lossy()
            .into_owned(),
        annotations,
    })
}

/// The state for `status`; `pid` is the init's PID as the agent sees it.
pub fn state(hooks: &GuestHooks, status: &str, pid: i32) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&State {
        oci_version: "1.0.2-dev",
        id: &hooks.id,
        status,
        pid,
        bundle: &hooks.bundle,
        annotations: &hooks.annotations,
    })
    .map_err(|e| format!("formatting the hooks' state: {e}"))
}

/// Runs the hooks of one stage in order (in the forked init); the first failure is the
/// error.
pub fn run(stage: &str, hooks: &[HookPlan], state: &[u8]) -> Result<(), String> {
    for (index, hook) in hooks.iter().enumerate() {
        run_one(hook, state).map_err(|why| {
            format!(
                "{stage} hook #{index} ({}) {why}",
                hook.path.to_string_lossy()
            )
        })?;
    }
    Ok(())
}

fn run_one(hook: &HookPlan, state: &[u8]) -> Result<(), String> {
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {}", e.desc()));
    let (stdin_r, stdin_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    // SAFETY: the caller is a single-threaded fork child; the new child only calls
    // async-signal-safe functions (setpgid, dup2, execve, _exit) with data made before.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {}", e.desc()))? {
        ForkResult::Child => {
            // SAFETY: plain syscalls on descriptors this process holds; execve gets
            // NUL-terminated arrays built before the fork.
            unsafe {
                libc::setpgid(0, 0);
                libc::dup2(stdin_r.as_raw_fd(), 0);
                libc::dup2(out_w.as_raw_fd(), 1);
                libc::dup2(out_w.as_raw_fd(), 2);
            }
            let _ = nix::unistd::execve(&hook.path, &hook.argv, &hook.envp);
            // SAFETY: ends the child without running the copied state's destructors.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(stdin_r);
            drop(out_w);
            feed(stdin_w, state);
            wait(child, hook.timeout, out_r)
        }
    }
}

/// Writes the state without blocking: a hook that never reads its stdin must not hang
/// the container, and a closed pipe is its business.
fn feed(stdin: OwnedFd, state: &[u8]) {
    let _ = nix::fcntl::fcntl(
        stdin.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    );
    let _ = nix::unistd::write(&stdin, state);
}

fn wait(child: Pid, timeout: Option<Duration>, output: OwnedFd) -> Result<(), String> {
    let _ = nix::fcntl::fcntl(
        output.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    );
    let mut kept = Vec::new();
    let drain = |kept: &mut Vec<u8>| {
        let mut buf = [0u8; 1024];
        while let Ok(n) = nix::unistd::read(output.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            let room = OUTPUT_LIMIT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
    };
    let started = Instant::now();
    loop {
        drain(&mut kept);
        match nix::sys::wait::waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(WaitStatus::Exited(_, code)) => {
                drain(&mut kept);
                return Err(format!("failed: exit status {code}{}", shown(&kept)));
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return Err(format!("failed: killed by {signal}{}", shown(&kept)))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("waiting for it: {}", e.desc())),
        }
        if let Some(limit) = timeout {
            if started.elapsed() >= limit {
                // SAFETY: kill has no memory arguments; the group is the hook's own and
                // the hook is not reaped yet.
                unsafe { libc::kill(-child.as_raw(), libc::SIGKILL) };
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(format!(
                    "timed out after {} s{}",
                    limit.as_secs(),
                    shown(&kept)
                ));
            }
        }
        std::thread::sleep(POLL);
    }
}

fn shown(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(", output: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(json: serde_json::Value) -> Hooks {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_guest_stages_plan_and_the_others_are_not_ours() {
        let h = hooks(serde_json::json!({
            "prestart": [{"path": "/host/only"}],
            "createContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "true"], "env": ["A=1"], "timeout": 3}],
            "startContainer": [{"path": "/bin/true"}]
        }));
        let plan = plan(
            Some(&h),
            "c1",
            std::path::Path::new("/run/ward/containers/c1/rootfs"),
            HashMap::new(),
        )
        .unwrap();
        assert_eq!(plan.create_container.len(), 1);
        assert_eq!(
            plan.create_container[0].timeout,
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            plan.start_container[0].argv,
            vec![CString::new("/bin/true").unwrap()]
        );
        assert_eq!(plan.bundle, "/run/ward/containers/c1");
        let state: serde_json::Value =
            serde_json::from_slice(&state(&plan, "creating", 7).unwrap()).unwrap();
        assert_eq!(state["status"], "creating");
        assert_eq!(state["pid"], 7);
        assert_eq!(state["id"], "c1");
    }

    #[test]
    fn bad_hooks_are_named() {
        let err = plan(
            Some(&hooks(
                serde_json::json!({"startContainer": [{"path": "true"}]}),
            )),
            "c",
            std::path::Path::new("/r"),
            HashMap::new(),
        )
        .unwrap_err();
        assert!(matches!(err, HookError::RelativePath { .. }), "{err}");
        let err = plan(
            Some(&hooks(
                serde_json::json!({"createContainer": [{"path": "/x", "timeout": -1}]}),
            )),
            "c",
            std::path::Path::new("/r"),
            HashMap::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "createContainer hook #0: timeout -1 is not a positive number of seconds"
        );
    }

    #[test]
    fn hooks_run_with_the_state_and_fail_or_time_out_with_a_reason() {
        let dir = std::env::temp_dir().join(format!("ward-agent-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let h = hooks(serde_json::json!({
            "createContainer": [
                {"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", out.display())]},
                {"path": "/bin/sh", "args": ["sh", "-c", "echo no >&2; exit 2"]}
            ],
            "startContainer": [{"path": "/bin/sleep", "args": ["sleep", "100"], "timeout": 1}]
        }));
        let plan = plan(
            Some(&h),
            "c",
            std::path::Path::new("/r/rootfs"),
            HashMap::new(),
        )
        .unwrap();
        let err = run("createContainer", &plan.create_container, b"{\"id\":\"c\"}").unwrap_err();
        assert_eq!(
            err,
            "createContainer hook #1 (/bin/sh) failed: exit status 2, output: no"
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"id\":\"c\"}");
        let started = Instant::now();
        let err = run("startContainer", &plan.start_container, b"{}").unwrap_err();
        assert_eq!(
            err,
            "startContainer hook #0 (/bin/sleep) timed out after 1 s"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
