//! A process the agent started in a container (its init or an exec): its PID, where its exit
//! status lands, and the agent's ends of its stdio pipes until the host attaches them.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::fcntl::OFlag;
use thiserror::Error;
use ward_agent_protocol::stream::StreamKind;

use crate::reaper::{ExitCell, ExitStatus};

#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("{what} has already exited ({status})")]
    Exited { what: String, status: ExitStatus },
    #[error("sending signal {signal} to {what}: {source}")]
    Signal {
        what: String,
        signal: i32,
        source: std::io::Error,
    },
    #[error("the {stream} of {what} is already attached")]
    AlreadyAttached { what: String, stream: &'static str },
    #[error("creating the stdio pipes: {0}")]
    Pipe(nix::Error),
    #[error("{what} has no terminal")]
    NoTerminal { what: String },
    #[error("{what} has a terminal: its output is all on stdout")]
    NoStderr { what: String },
    #[error("{what}: {source}")]
    Terminal {
        what: String,
        source: crate::terminal::TerminalError,
    },
}

/// The agent's ends of a process's stdio pipes; each is taken once, by the stream that
/// attaches it.
#[derive(Debug, Default)]
pub struct StdioEnds {
    stdin: Mutex<Option<File>>,
    stdout: Mutex<Option<File>>,
    stderr: Mutex<Option<File>>,
    /// The terminal master, for window sizes; `None` for a process with pipes.
    terminal: Option<File>,
}

impl StdioEnds {
    /// A terminal's master: stdin writes to it, stdout reads from it, there is no stderr.
    pub fn terminal(master: OwnedFd) -> std::io::Result<StdioEnds> {
        let master = File::from(master);
        Ok(StdioEnds {
            stdin: Mutex::new(Some(master.try_clone()?)),
            stdout: Mutex::new(Some(master.try_clone()?)),
            stderr: Mutex::new(None),
            terminal: Some(master),
        })
    }
}

/// What the child puts on fds 0, 1 and 2.
#[derive(Debug)]
pub enum ChildStdio {
    /// Pipe ends, installed first thing in the child.
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A terminal slave of the container's devpts, opened by the child in its final root:
    /// its number is known at fork (exec) or arrives with START (init).
    Terminal { number: Option<u32> },
}

/// Creates the three pipes, close-on-exec on both ends so that no other child the agent
/// forks meanwhile keeps a copy past its exec (the child dup2()s its ends onto 0, 1, 2,
/// which clears the flag there).
pub fn stdio_pipes() -> Result<(StdioEnds, ChildStdio), ProcessError> {
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(ProcessError::Pipe);
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    Ok((
        StdioEnds {
            stdin: Mutex::new(Some(File::from(stdin_w))),
            stdout: Mutex::new(Some(File::from(stdout_r))),
            stderr: Mutex::new(Some(File::from(stderr_r))),
            terminal: None,
        },
        ChildStdio::Pipes {
            stdin: stdin_r,
            stdout: stdout_w,
            stderr: stderr_w,
        },
    ))
}

pub struct Process {
    /// "process X of container Y": how errors and logs name it.
    pub what: String,
    pub pid: i32,
    /// A pidfd opened as soon as the PID was known, so that a signal never reaches a
    /// process that recycled the PID; `None` if the process had already exited or pidfds
    /// are unavailable.
    pidfd: Option<OwnedFd>,
    pub exit: Arc<ExitCell>,
    stdio: StdioEnds,
    /// The signal the host asked for when the agent had to use SIGKILL instead (see
    /// `Container::signal_init`): the exit is reported as that signal.
    terminated_by: Mutex<Option<i32>>,
}

impl Process {
    pub fn new(what: String, pid: i32, exit: Arc<ExitCell>, stdio: StdioEnds) -> Process {
        let pidfd = if exit.get().is_none() {
            pidfd_open(pid)
        } else {
            None
        };
        Process {
            what,
            pid,
            pidfd,
            exit,
            stdio,
            terminated_by: Mutex::new(None),
        }
    }

    /// Sets the window size of the process's terminal.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), ProcessError> {
        let master = self
            .stdio
            .terminal
            .as_ref()
            .ok_or_else(|| ProcessError::NoTerminal {
                what: self.what.clone(),
            })?;
        crate::terminal::set_window_size(master.as_raw_fd(), rows, cols).map_err(|source| {
            ProcessError::Terminal {
                what: self.what.clone(),
                source,
            }
        })
    }

    /// Records that a SIGKILL about to be sent stands for `signal`.
    pub fn set_terminated_by(&self, signal: i32) {
        *self.terminated_by.lock().unwrap_or_else(|e| e.into_inner()) = Some(signal);
    }

    fn report(&self, status: ExitStatus) -> ExitStatus {
        let stood_for = *self.terminated_by.lock().unwrap_or_else(|e| e.into_inner());
        match (status, stood_for) {
            (ExitStatus::Signaled(libc::SIGKILL), Some(signal)) => ExitStatus::Signaled(signal),
            _ => status,
        }
    }

    /// The exit status, if the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit.get().map(|s| self.report(s))
    }

    /// Blocks until the process exits.
    pub fn wait(&self) -> ExitStatus {
        self.report(self.exit.wait())
    }

    /// Hands out the agent's end of one stdio pipe, once.
    pub fn take_stream(&self, kind: StreamKind) -> Result<File, ProcessError> {
        let slot = match kind {
            StreamKind::Stdin => &self.stdio.stdin,
            StreamKind::Stdout => &self.stdio.stdout,
            StreamKind::Stderr => &self.stdio.stderr,
        };
        if self.stdio.terminal.is_some() && kind == StreamKind::Stderr {
            return Err(ProcessError::NoStderr {
                what: self.what.clone(),
            });
        }
        slot.lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| ProcessError::AlreadyAttached {
                what: self.what.clone(),
                stream: kind.as_str(),
            })
    }

    /// Sends `signal` (0 checks existence); an error if the process has exited.
    pub fn signal(&self, signal: i32) -> Result<(), ProcessError> {
        if let Some(status) = self.exit_status() {
            return Err(ProcessError::Exited {
                what: self.what.clone(),
                status,
            });
        }
        let result = match &self.pidfd {
            // SAFETY: pidfd_send_signal takes a pidfd we own, a signal number, a null
            // siginfo (meaning "as kill() would") and flags 0.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            // SAFETY: kill has no memory arguments.
            None => (unsafe { libc::kill(self.pid, signal) }) as libc::c_long,
        };
        if result < 0 {
            let source = std::io::Error::last_os_error();
            // ESRCH: it died (a zombie not yet reaped still accepts signals, so this means
            // the reaper has it or is about to have it).
            if source.raw_os_error() == Some(libc::ESRCH) {
                let status = self.wait();
                return Err(ProcessError::Exited {
                    what: self.what.clone(),
                    status,
                });
            }
            return Err(ProcessError::Signal {
                what: self.what.clone(),
                signal,
                source,
            });
        }
        Ok(())
    }
}

/// Whether a signal's default action ends the process (terminate or core dump): the
/// signals a PID namespace's init would silently drop when it has no handler.
pub fn default_action_terminates(signal: i32) -> bool {
    if signal >= libc::SIGRTMIN() && signal <= libc::SIGRTMAX() {
        return true;
    }
    matches!(
        signal,
        libc::SIGHUP
            | libc::SIGINT
            | libc::SIGQUIT
            | libc::SIGILL
            | libc::SIGTRAP
            | libc::SIGABRT
            | libc::SIGBUS
            | libc::SIGFPE
            | libc::SIGUSR1
            | libc::SIGSEGV
            | libc::SIGUSR2
            | libc::SIGPIPE
            | libc::SIGALRM
            | libc::SIGTERM
            | libc::SIGSTKFLT
            | libc::SIGXCPU
            | libc::SIGXFSZ
            | libc::SIGVTALRM
            | libc::SIGPROF
            | libc::SIGIO
            | libc::SIGPWR
            | libc::SIGSYS
    )
}

/// Whether /proc/<pid>/status text shows `signal` caught (SigCgt) or ignored (SigIgn).
pub fn signal_handled(status: &str, signal: i32) -> bool {
    if !(1..=64).contains(&signal) {
        return false;
    }
    let bit = 1u64 << (signal - 1);
    status.lines().any(|line| {
        let Some((key, value)) = line.split_once(':') else {
            return false;
        };
        matches!(key, "SigCgt" | "SigIgn")
            && u64::from_str_radix(value.trim(), 16).is_ok_and(|mask| mask & bit != 0)
    })
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    let fd = i32::try_from(fd).ok()?;
    // SAFETY: the kernel just gave us this descriptor (close-on-exec by default) and
    // nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn each_stream_is_taken_once() {
        let (ends, child) = stdio_pipes().unwrap();
        let process = Process::new(
            "process - of container t".into(),
            std::process::id() as i32,
            Arc::new(ExitCell::default()),
            ends,
        );
        let mut stdout = process.take_stream(StreamKind::Stdout).unwrap();
        assert!(matches!(
            process.take_stream(StreamKind::Stdout),
            Err(ProcessError::AlreadyAttached { .. })
        ));
        // The pipes connect: what the child writes, the agent's end reads.
        let ChildStdio::Pipes {
            stdout: child_stdout,
            ..
        } = child
        else {
            panic!("stdio_pipes gives pipes");
        };
        let mut child_out = File::from(child_stdout);
        child_out.write_all(b"hi").unwrap();
        drop(child_out);
        let mut got = String::new();
        stdout.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hi");
        // Signal 0 to a live process (ourselves) succeeds.
        process.signal(0).unwrap();
        assert!(matches!(
            process.resize(24, 80),
            Err(ProcessError::NoTerminal { .. })
        ));
    }

    #[test]
    fn a_terminal_process_has_one_output_stream_and_resizes() {
        let master = crate::terminal::open_master(std::path::Path::new("/")).unwrap();
        let ends = StdioEnds::terminal(master.fd).unwrap();
        let exit = Arc::new(ExitCell::default());
        let process = Process::new(
            "terminal test".into(),
            std::process::id() as i32,
            exit,
            ends,
        );
        assert!(matches!(
            process.take_stream(StreamKind::Stderr),
            Err(ProcessError::NoStderr { .. })
        ));
        process.take_stream(StreamKind::Stdin).unwrap();
        process.take_stream(StreamKind::Stdout).unwrap();
        process.resize(40, 120).unwrap();
    }

    #[test]
    fn a_kill_standing_for_another_signal_is_reported_as_it() {
        let (ends, _child) = stdio_pipes().unwrap();
        let exit = Arc::new(ExitCell::default());
        let process = Process::new("p".into(), std::process::id() as i32, exit.clone(), ends);
        process.set_terminated_by(libc::SIGTERM);
        assert_eq!(
            process.report(ExitStatus::Signaled(libc::SIGKILL)),
            ExitStatus::Signaled(libc::SIGTERM)
        );
        assert_eq!(process.report(ExitStatus::Exited(0)), ExitStatus::Exited(0));
    }

    #[test]
    fn signal_masks_and_default_actions() {
        let status = "Name:\tsleep\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000004\n\
                      SigCgt:\t0000000000004002\n";
        assert!(signal_handled(status, libc::SIGINT)); // bit 1 of SigCgt
        assert!(signal_handled(status, libc::SIGQUIT)); // bit 2 of SigIgn
        assert!(signal_handled(status, libc::SIGTERM)); // bit 14 of SigCgt
        assert!(!signal_handled(status, libc::SIGHUP));
        assert!(!signal_handled("", libc::SIGTERM));
        assert!(default_action_terminates(libc::SIGTERM));
        assert!(default_action_terminates(libc::SIGRTMIN() + 1));
        assert!(!default_action_terminates(libc::SIGCHLD));
        assert!(!default_action_terminates(libc::SIGCONT));
        assert!(!default_action_terminates(libc::SIGKILL));
        assert!(!default_action_terminates(0));
    }
}
