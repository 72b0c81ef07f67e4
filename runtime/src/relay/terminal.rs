//! The host side of a guest process's terminal.
//!
//! The real terminal is in the guest (the agent opens it in the container's devpts). On
//! the host, an engine that passed `--console-socket` expects a pty master over
//! SCM_RIGHTS, as runc sends it; ward creates a host pty pair, sends the master, and gives
//! the slave to the relay as its stdin, stdout and stderr. The relay puts that slave in
//! raw mode, so the host line discipline passes every byte through unchanged (the guest's
//! terminal does the echoing and line editing), and makes it its controlling terminal, so
//! a window-size change by the engine reaches the relay as SIGWINCH, which it turns into a
//! ResizeTerminal call.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::termios::{self, SetArg, Termios};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TerminalError {
    #[error("opening a pseudo-terminal: {0}")]
    OpenPty(nix::Error),
    #[error("connecting to the console socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sending the terminal to the console socket {path}: {errno}")]
    Send { path: PathBuf, errno: nix::Error },
    #[error("{what}: {errno}")]
    Setup {
        what: &'static str,
        errno: nix::Error,
    },
}

/// Creates a pty pair, sends its master to the Unix socket at `socket` (the message
/// carries the slave's name, as runc's does) and returns the slave.
pub fn send_console(socket: &Path) -> Result<OwnedFd, TerminalError> {
    let pty = nix::pty::openpty(None, None).map_err(TerminalError::OpenPty)?;
    for fd in [pty.master.as_raw_fd(), pty.slave.as_raw_fd()] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|errno| TerminalError::Setup {
            what: "marking the terminal close-on-exec",
            errno,
        })?;
    }
    let stream = UnixStream::connect(socket).map_err(|source| TerminalError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    let name = nix::unistd::ttyname(pty.slave.as_fd())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/dev/ptmx".to_string());
    let fds = [pty.master.as_raw_fd()];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(name.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|errno| TerminalError::Send {
        path: socket.to_path_buf(),
        errno,
    })?;
    // The engine holds the master now; ours closes here.
    Ok(pty.slave)
}

/// Makes the terminal on `fd` the caller's controlling terminal. The caller must lead a
/// session without one (the relay calls setsid before exec).
pub fn take_controlling(fd: BorrowedFd<'_>) -> Result<(), TerminalError> {
    // SAFETY: TIOCSCTTY takes an int argument; 0 means "do not steal it from another
    // session".
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc < 0 {
        return Err(TerminalError::Setup {
            what: "making the console the relay's controlling terminal",
            errno: nix::Error::last(),
        });
    }
    Ok(())
}

/// Raw mode on a terminal until dropped (then the old settings come back).
pub struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    pub fn enter(fd: BorrowedFd<'a>) -> Result<RawMode<'a>, TerminalError> {
        let setup = |what| move |errno| TerminalError::Setup { what, errno };
        let saved = termios::tcgetattr(fd).map_err(setup("reading the terminal's settings"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)
            .map_err(setup("putting the terminal in raw mode"))?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// Our stdin, for the life of the process.
pub fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

/// For a foreground `run` or `exec` of a terminal process: raw mode on our stdin while the
/// process runs, when stdin is a terminal (the guest's terminal does the echoing).
pub fn raw_stdin(terminal: bool) -> Result<Option<RawMode<'static>>, TerminalError> {
    let stdin = stdin();
    if !terminal || !is_terminal(stdin) {
        return Ok(None);
    }
    RawMode::enter(stdin).map(Some)
}

/// The window size of the terminal on `fd` (rows, columns), if it is one and has a size.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into a live local.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    use std::os::fd::FromRawFd;
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_master_arrives_over_the_console_socket_and_reaches_the_slave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let receiver = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                conn.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )
            .unwrap();
            let mut master = None;
            for cmsg in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(fds) = cmsg {
                    // SAFETY: the kernel installed this descriptor for us.
                    master = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
                }
            }
            master.expect("a descriptor came with the message")
        });
        let slave = send_console(&path).unwrap();
        let master = receiver.join().unwrap();
        let _raw = RawMode::enter(slave.as_fd()).unwrap();
        nix::unistd::write(&master, b"typed").unwrap();
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(slave.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"typed");
        // A size the engine sets on the master is what the slave reports.
        let size = libc::winsize {
            ws_row: 33,
            ws_col: 101,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a live local.
        assert_eq!(
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) },
            0
        );
        assert_eq!(window_size(slave.as_fd()), Some((33, 101)));
        assert!(is_terminal(slave.as_fd()));
    }

    #[test]
    fn a_missing_console_socket_is_named() {
        let err = send_console(Path::new("/nonexistent/console.sock")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("connecting to the console socket /nonexistent/console.sock"),
            "{err}"
        );
    }
}
