//! The host-side stand-in for one guest process.
//!
//! Engines wait on a host PID and signal it; the real process lives in the guest. The relay
//! is that PID: it carries the process's stdin, stdout and stderr between its own standard
//! file descriptors and the agent's stream connections, forwards the signals it receives to
//! the guest process, and exits with the guest process's status. `ward run` acts as the relay
//! itself; `ward create` starts one (`ward relay`, a hidden command) that outlives it.

pub mod signals;
pub mod terminal;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use slog::{debug, warn, Logger};
use ward_agent_protocol::stream::StreamKind;
use ward_hypervisor::VsockConnection;

use crate::sandbox::{Sandbox, SandboxError};

/// After the process has exited, how long its output may still be draining. Output that a
/// straggler (a daemonized grandchild keeping the pipe open) writes later is not waited for.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// The stream connections of one guest process.
pub struct Streams {
    pub stdin: VsockConnection,
    pub stdout: VsockConnection,
    /// None for a process with a terminal: its output is all on the terminal.
    pub stderr: Option<VsockConnection>,
}

impl Streams {
    /// Opens them; done before the process starts, so no byte is missed.
    pub fn open(
        sandbox: &Sandbox,
        container_id: &str,
        exec_id: &str,
        terminal: bool,
    ) -> Result<Self, SandboxError> {
        let stderr = if terminal {
            None
        } else {
            Some(sandbox.open_stream(container_id, exec_id, StreamKind::Stderr)?)
        };
        Ok(Streams {
            stdin: sandbox.open_stream(container_id, exec_id, StreamKind::Stdin)?,
            stdout: sandbox.open_stream(container_id, exec_id, StreamKind::Stdout)?,
            stderr,
        })
    }
}

/// Copies until EOF on `from`; returns the byte count. A write error on `to` (the reader
/// went away) ends the copy too: there is no one left to deliver to.
fn copy<R: Read, W: Write>(mut from: R, mut to: W) -> u64 {
    let mut buf = vec![0u8; 32 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return total,
        };
        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            return total;
        }
        total += n as u64;
    }
}

/// A duplicate of one of our standard descriptors as a File, so threads own what they use.
fn dup_std(fd: BorrowedFd<'_>) -> std::io::Result<File> {
    Ok(File::from(fd.try_clone_to_owned()?))
}

/// The running copies of one process's stdio.
pub struct Pumps {
    outputs: Vec<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
}

/// Starts copying: our stdin to the guest, the guest's stdout and stderr to ours.
pub fn pump(streams: Streams, log: &Logger) -> std::io::Result<Pumps> {
    let our_stdin = dup_std(std::io::stdin().as_fd())?;
    let our_stdout = dup_std(std::io::stdout().as_fd())?;
    let our_stderr = dup_std(std::io::stderr().as_fd())?;

    let stdin_conn = streams.stdin;
    let log_in = log.clone();
    // Not joined: it may sit in read(0) forever when our stdin is a terminal or an idle
    // pipe; it ends with the process.
    let stdin_writer = stdin_conn.try_clone()?;
    std::thread::spawn(move || {
        let n = copy(our_stdin, stdin_writer);
        if let Err(e) = stdin_conn.shutdown_write() {
            debug!(log_in, "closing the guest stdin"; "error" => e.to_string());
        }
        debug!(log_in, "stdin closed"; "bytes" => n);
    });

    let (tx, done) = mpsc::channel();
    let mut outputs = Vec::new();
    let mut outputs_to_copy = vec![("stdout", streams.stdout, our_stdout)];
    if let Some(stderr) = streams.stderr {
        outputs_to_copy.push(("stderr", stderr, our_stderr));
    }
    for (name, conn, sink) in outputs_to_copy {
        let tx = tx.clone();
        let log = log.clone();
        outputs.push(std::thread::spawn(move || {
            let n = copy(conn, sink);
            debug!(log, "stream ended"; "stream" => name, "bytes" => n);
            let _ = tx.send(());
        }));
    }
    Ok(Pumps { outputs, done })
}

impl Pumps {
    /// Waits for the output streams to end, at most `DRAIN_GRACE` once the process is gone.
    pub fn drain(self, log: &Logger) {
        let mut remaining = self.outputs.len();
        while remaining > 0 {
            match self.done.recv_timeout(DRAIN_GRACE) {
                Ok(()) => remaining -= 1,
                Err(_) => {
                    warn!(
                        log,
                        "output still open after the process exited; not waiting for it"
                    );
                    return;
                }
            }
        }
        for handle in self.outputs {
            let _ = handle.join();
        }
    }
}

/// Relays one guest process until it exits: stdio both ways, forwarded signals; returns the
/// process's shell-style status. The caller has blocked the forwarded signals already.
/// With `terminal`, our stdin is the process's terminal on the host: its window size is
/// sent now and on every SIGWINCH, which is not forwarded as a signal.
pub fn serve(
    agent: std::sync::Arc<crate::sandbox::Agent>,
    container_id: &str,
    exec_id: &str,
    streams: Streams,
    terminal: bool,
    log: &Logger,
) -> Result<i32, RelayError> {
    let resize = {
        let agent = agent.clone();
        let (id, exec, log) = (container_id.to_string(), exec_id.to_string(), log.clone());
        move || {
            let Some((rows, cols)) = terminal::window_size(std::io::stdin().as_fd()) else {
                return;
            };
            if let Err(e) = agent.resize_terminal(&id, &exec, rows, cols) {
                warn!(log, "resizing the terminal"; "error" => e.to_string());
            }
        }
    };
    if terminal {
        resize();
    }
    let pumps = pump(streams, log).map_err(|e| RelayError::Stdio(e.to_string()))?;
    {
        let agent = agent.clone();
        let (id, exec, log) = (container_id.to_string(), exec_id.to_string(), log.clone());
        signals::spawn_forwarder(move |signal| {
            if terminal && signal == nix::sys::signal::Signal::SIGWINCH {
                resize();
                return;
            }
            debug!(log, "forwarding signal"; "signal" => signal.as_str());
            if let Err(e) = agent.signal_process(&id, &exec, signal as i32, false) {
                warn!(log, "forwarding a signal"; "signal" => signal.as_str(), "error" => e.to_string());
            }
        })
        .map_err(|e| RelayError::Stdio(e.to_string()))?;
    }
    let status = agent.wait_process(container_id, exec_id)?;
    pumps.drain(log);
    Ok(status)
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relaying stdio: {0}")]
    Stdio(String),
    #[error(transparent)]
    Agent(#[from] crate::sandbox::AgentError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_moves_every_byte_and_stops_at_eof() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        assert_eq!(copy(&data[..], &mut out), data.len() as u64);
        assert_eq!(out, data);
    }

    #[test]
    fn copy_stops_when_the_reader_is_gone() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert_eq!(copy(&b"abc"[..], Closed), 0);
    }
}
