//! The pipes between the agent and the children it forks for a container process.
//!
//! - report (child → agent, close-on-exec in the child): framed [`Report`]s. The child's
//!   copy closes when it execs, so the agent reading EOF right after the last expected
//!   report means "exec succeeded"; an `Error` report means it did not, and says why.
//! - control (agent → child): single bytes. [`MAPS_WRITTEN`] releases the intermediate
//!   child once the agent has written its user namespace's ID maps; [`START`] releases a
//!   container's init at StartContainer. EOF means "give up": the child exits.
//!
//! A report is at most [`MAX_REPORT`] bytes and written with one write(2), so reports from
//! the intermediate child and from the container process never interleave (PIPE_BUF).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use thiserror::Error;

pub const MAPS_WRITTEN: u8 = b'M';
pub const START: u8 = b'S';

/// START, followed for an init with a terminal by its slave's number (u32 LE): one write,
/// so the child never sees half of it.
pub fn start_message(terminal: Option<u32>) -> Vec<u8> {
    let mut message = vec![START];
    if let Some(number) = terminal {
        message.extend_from_slice(&number.to_le_bytes());
    }
    message
}

/// In the child, after START: the terminal number that follows it.
pub fn read_terminal_number(control: &impl AsRawFd) -> Option<u32> {
    let mut bytes = [0u8; 4];
    let mut got = 0;
    while got < bytes.len() {
        // SAFETY: reads into the live remainder of `bytes`.
        let n = unsafe {
            libc::read(
                control.as_raw_fd(),
                bytes[got..].as_mut_ptr().cast(),
                bytes.len() - got,
            )
        };
        match n {
            n if n > 0 => got += n as usize,
            n if n < 0 && std::io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
    Some(u32::from_le_bytes(bytes))
}

/// Largest report, header included: below PIPE_BUF (4096), so a write is atomic.
pub const MAX_REPORT: usize = 4000;
const HEADER: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The intermediate child made a new user namespace and waits for its ID maps.
    UserNamespace,
    /// The PID (in the agent's namespace) of the container process.
    Pid(i32),
    /// The container's init is built and waits for START.
    Ready,
    /// Something failed; the child exits after sending this.
    Error(String),
}

#[derive(Debug, Error)]
pub enum SyncError {
    #[error("the container process did not report within the deadline")]
    Timeout,
    #[error("reading from the container process: {0}")]
    Io(#[from] io::Error),
    #[error("malformed report from the container process: {0}")]
    Malformed(String),
}

/// Encodes a report: tag, payload length (u32 LE), payload.
pub fn encode(report: &Report) -> Vec<u8> {
    let (tag, payload): (u8, Vec<u8>) = match report {
        Report::UserNamespace => (b'U', Vec::new()),
        Report::Pid(pid) => (b'P', pid.to_le_bytes().to_vec()),
        Report::Ready => (b'R', Vec::new()),
        Report::Error(message) => {
            // Cut on a character boundary so the agent gets valid UTF-8.
            let mut end = message.len().min(MAX_REPORT - HEADER);
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            (b'E', message.as_bytes()[..end].to_vec())
        }
    };
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn decode(tag: u8, payload: &[u8]) -> Result<Report, SyncError> {
    Ok(match (tag, payload.len()) {
        (b'U', 0) => Report::UserNamespace,
        (b'R', 0) => Report::Ready,
        (b'P', 4) => {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(payload);
            Report::Pid(i32::from_le_bytes(bytes))
        }
        (b'E', _) => Report::Error(String::from_utf8_lossy(payload).into_owned()),
        _ => {
            return Err(SyncError::Malformed(format!(
                "tag {tag:#x} with {} bytes",
                payload.len()
            )))
        }
    })
}

/// Waits until `file` is readable or `deadline` passes.
fn wait_readable(file: &File, deadline: Instant) -> Result<(), SyncError> {
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or(SyncError::Timeout)?;
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue, // re-check the deadline
            Ok(_) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(SyncError::Io(e.into())),
        }
    }
}

/// Reads exactly `buf.len()` bytes; false on EOF before the first byte.
fn read_exact_or_eof(
    file: &mut File,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<bool, SyncError> {
    let mut done = 0;
    while done < buf.len() {
        wait_readable(file, deadline)?;
        match file.read(&mut buf[done..]) {
            Ok(0) if done == 0 => return Ok(false),
            Ok(0) => return Err(SyncError::Malformed("truncated report".into())),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Reads the next report; `None` when every child has closed the pipe (for a container
/// process past its exec, that is success).
pub fn read_report(file: &mut File, deadline: Instant) -> Result<Option<Report>, SyncError> {
    let mut header = [0u8; HEADER];
    if !read_exact_or_eof(file, &mut header, deadline)? {
        return Ok(None);
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[1..]);
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_REPORT {
        return Err(SyncError::Malformed(format!("{len}-byte report")));
    }
    let mut payload = vec![0u8; len];
    if len > 0 && !read_exact_or_eof(file, &mut payload, deadline)? {
        return Err(SyncError::Malformed("truncated report".into()));
    }
    decode(header[0], &payload).map(Some)
}

/// Child side: sends one report with a single write(2). Errors are ignored: if the agent's
/// end is gone there is nobody left to tell.
pub fn send(fd: &impl AsRawFd, report: &Report) {
    let bytes = encode(report);
    // SAFETY: writes `bytes.len()` bytes from a live buffer to a descriptor we hold.
    unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
}

/// Child side: blocks for the agent's next control byte; `None` on EOF or error.
pub fn wait_control(fd: &impl AsRawFd) -> Option<u8> {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads at most one byte into a live local.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            return Some(byte);
        }
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        return None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (File::from(r), File::from(w))
    }

    #[test]
    fn reports_round_trip_and_eof_ends() {
        let (mut r, w) = pipe();
        for report in [
            Report::UserNamespace,
            Report::Pid(4242),
            Report::Ready,
            Report::Error("exec \"x\": No such file or directory".into()),
        ] {
            send(&w, &report);
            let deadline = Instant::now() + Duration::from_secs(5);
            assert_eq!(read_report(&mut r, deadline).unwrap(), Some(report));
        }
        drop(w);
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(read_report(&mut r, deadline).unwrap(), None);
    }

    #[test]
    fn long_errors_are_cut_to_one_atomic_write() {
        let long = "é".repeat(5000);
        let bytes = encode(&Report::Error(long));
        assert!(bytes.len() <= MAX_REPORT);
        let (mut r, mut w) = pipe();
        w.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        match read_report(&mut r, deadline).unwrap() {
            Some(Report::Error(text)) => assert!(text.chars().all(|c| c == 'é')),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn silence_times_out_and_garbage_is_refused() {
        let (mut r, mut w) = pipe();
        let deadline = Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            read_report(&mut r, deadline),
            Err(SyncError::Timeout)
        ));
        w.write_all(b"Z\0\0\0\0").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            read_report(&mut r, deadline),
            Err(SyncError::Malformed(_))
        ));
        w.write_all(b"P\x02\0\0\0ab").unwrap();
        assert!(matches!(
            read_report(&mut r, deadline),
            Err(SyncError::Malformed(_))
        ));
    }

    #[test]
    fn control_bytes_and_eof() {
        let (r, mut w) = pipe();
        w.write_all(&[START]).unwrap();
        assert_eq!(wait_control(&r), Some(START));
        drop(w);
        assert_eq!(wait_control(&r), None);
    }
}
