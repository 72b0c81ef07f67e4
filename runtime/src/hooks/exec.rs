//! Running one hook: its own process group, the state on stdin, what it prints kept for
//! the error message, killed (with everything it started) at its timeout.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use super::HookError;

/// What is kept of a hook's stdout and of its stderr, each.
const OUTPUT_LIMIT: usize = 16 * 1024;
/// How often a running hook is checked on.
const POLL: Duration = Duration::from_millis(10);
/// How long the output of an exited hook is waited for: a process it left behind may
/// hold its stdout open for ever.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Reads up to OUTPUT_LIMIT bytes of `pipe`, then drains it so the writer never blocks.
fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        let _ = tx.send(kept);
    });
    rx
}

fn output_text(stdout: &[u8], stderr: &[u8]) -> String {
    let mut text = String::new();
    for (name, bytes) in [("stdout", stdout), ("stderr", stderr)] {
        let shown = String::from_utf8_lossy(bytes);
        let shown = shown.trim();
        if !shown.is_empty() {
            text.push_str(&format!(", {name}: {shown}"));
        }
    }
    text
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Kills the hook's process group: the hook and whatever it started.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory arguments; the group is the hook's own
        // (process_group(0)) and the hook has not been reaped yet, so its ID is not reused.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill();
}

/// Runs `hook` with `state` on its stdin, to its end or its timeout.
pub fn run_hook(
    stage: &'static str,
    index: usize,
    hook: &Hook,
    state: &[u8],
) -> Result<(), HookError> {
    let path = hook.path().clone();
    if !path.is_absolute() {
        return Err(HookError::RelativePath { stage, index, path });
    }
    let timeout = match hook.timeout() {
        None => None,
        Some(secs) if secs > 0 => Some(Duration::from_secs(secs.unsigned_abs())),
        Some(timeout) => {
            return Err(HookError::BadTimeout {
                stage,
                index,
                path,
                timeout,
            })
        }
    };
    let mut command = Command::new(&path);
    let args = hook.args().as_deref().unwrap_or(&[]);
    if let Some((argv0, rest)) = args.split_first() {
        command.arg0(argv0).args(rest);
    }
    // The hook's environment is exactly the spec's, as runc gives it. Entries without a
    // '=' are no variable and are left out.
    command.env_clear();
    for entry in hook.env().as_deref().unwrap_or(&[]) {
        if let Some((key, value)) = entry.split_once('=') {
            command.env(key, value);
        }
    }
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(|source| HookError::Spawn {
        stage,
        index,
        path: path.clone(),
        source,
    })?;

    if let Some(mut stdin) = child.stdin.take() {
        let state = state.to_vec();
        // A hook need not read its stdin: a write to a closed pipe is no error of ours.
        thread::spawn(move || {
            let _ = stdin.write_all(&state);
        });
    }
    let stdout = child.stdout.take().map(collect);
    let stderr = child.stderr.take().map(collect);
    let output = |deadline: Instant| {
        let wait = |rx: Option<mpsc::Receiver<Vec<u8>>>| {
            rx.and_then(|rx| {
                rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .ok()
            })
            .unwrap_or_default()
        };
        let out = wait(stdout);
        let err = wait(stderr);
        output_text(&out, &err)
    };

    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                kill_group(&mut child);
                let _ = child.wait();
                return Err(HookError::Wait {
                    stage,
                    index,
                    path,
                    source,
                });
            }
        }
        if let Some(limit) = timeout {
            if started.elapsed() >= limit {
                kill_group(&mut child);
                let _ = child.wait();
                return Err(HookError::Timeout {
                    stage,
                    index,
                    path,
                    secs: limit.as_secs(),
                    output: output(Instant::now() + OUTPUT_GRACE),
                });
            }
        }
        thread::sleep(POLL);
    };
    if status.success() {
        return Ok(());
    }
    Err(HookError::Failed {
        stage,
        index,
        path,
        status: describe(status),
        output: output(Instant::now() + OUTPUT_GRACE),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_hook_reads_the_state_with_its_own_args_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // argv[0] as the spec gives it, then $0 and $1 of the script.
        let script = format!(
            "echo \"$(tr '\\0' '\\n' < /proc/$$/cmdline | head -n 1) $0 $1 $WHO ${{HOME:-nohome}}\" > {0}; cat >> {0}",
            out.display()
        );
        let h = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["hook-name", "-c", script, "zero", "first"],
            "env": ["WHO=ward", "NOEQUALS"],
            "timeout": 5
        }));
        run_hook("prestart", 0, &h, b"{\"id\":\"c\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "hook-name zero first ward nohome\n{\"id\":\"c\"}"
        );
    }

    #[test]
    fn a_failing_hook_says_how_and_what_it_printed() {
        let h = hook(serde_json::json!({
            "path": "/bin/sh", "args": ["sh", "-c", "echo out; echo oops >&2; exit 3"]
        }));
        let err = run_hook("createRuntime", 1, &h, b"{}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "createRuntime hook #1 (/bin/sh) failed: exit status 3, stdout: out, stderr: oops"
        );
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let h = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("sleep 100 & echo $! > {}; wait", pid_file.display())],
            "timeout": 1
        }));
        let started = Instant::now();
        let err = run_hook("prestart", 0, &h, b"{}").unwrap_err();
        assert!(matches!(err, HookError::Timeout { secs: 1, .. }), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The sleep was killed with its group (a zombie until init reaps it at most).
        thread::sleep(Duration::from_millis(200));
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let alive = state
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z");
        assert!(
            !alive,
            "the hook's child {pid} survived its timeout: {state}"
        );
    }

    #[test]
    fn bad_hooks_are_refused_before_running() {
        let err = run_hook(
            "poststop",
            0,
            &hook(serde_json::json!({"path": "sh"})),
            b"{}",
        )
        .unwrap_err();
        assert!(matches!(err, HookError::RelativePath { .. }), "{err}");
        let err = run_hook(
            "poststop",
            0,
            &hook(serde_json::json!({"path": "/bin/true", "timeout": 0})),
            b"{}",
        )
        .unwrap_err();
        assert!(matches!(err, HookError::BadTimeout { .. }), "{err}");
        let err = run_hook(
            "poststop",
            0,
            &hook(serde_json::json!({"path": "/nonexistent/hook"})),
            b"{}",
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot start it"), "{err}");
    }
}
