//! Pseudo-terminals for container processes started with `process.terminal: true`.
//!
//! The terminal must belong to the container's own devpts instance, so that `tty` and
//! ttyname() inside the container name a /dev/pts entry that exists there. The agent
//! opens the master through `/proc/<pid>/root/dev/ptmx` of a process that already lives
//! in the container's root (the init once its rootfs is built), which lands in that
//! instance; the container process then opens its side, `/dev/pts/<n>`, by number from
//! inside the container and makes it its controlling terminal.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TerminalError {
    #[error("opening the container's pseudo-terminal multiplexer {path}: {source} (does the container mount devpts on /dev/pts?)")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} on the terminal: {source}")]
    Ioctl {
        what: &'static str,
        source: std::io::Error,
    },
}

/// A terminal master in a container's devpts and the number of its slave.
pub struct Master {
    pub fd: OwnedFd,
    pub number: u32,
}

/// Opens a new terminal in the devpts of the container whose root is `root`
/// (`/proc/<pid>/root`) and unlocks its slave.
pub fn open_master(root: &Path) -> Result<Master, TerminalError> {
    let path = root.join("dev/ptmx");
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|source| TerminalError::Open {
            path: path.clone(),
            source,
        })?;
    let fd = OwnedFd::from(file);
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from a live local.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(TerminalError::Ioctl {
            what: "unlocking the slave (TIOCSPTLCK)",
            source: std::io::Error::last_os_error(),
        });
    }
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int into a live local.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut number) } < 0 {
        return Err(TerminalError::Ioctl {
            what: "reading the slave's number (TIOCGPTN)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(Master { fd, number })
}

/// Sets the window size; the kernel sends SIGWINCH to the terminal's foreground group.
pub fn set_window_size(master: RawFd, rows: u16, cols: u16) -> Result<(), TerminalError> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a live local.
    if unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &size) } < 0 {
        return Err(TerminalError::Ioctl {
            what: "setting the window size (TIOCSWINSZ)",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `/dev/pts/<n>` as a NUL-terminated path in a fixed buffer: built without allocating,
/// for a forked child.
fn slave_path(number: u32, buf: &mut [u8; 32]) -> &[u8] {
    const PREFIX: &[u8] = b"/dev/pts/";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut n = number;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = PREFIX.len();
    for d in digits[..count].iter().rev() {
        buf[at] = *d;
        at += 1;
    }
    buf[at] = 0;
    &buf[..=at]
}

/// In the container process (after fork, in its final root, after setsid): opens slave
/// `number` and makes it stdin, stdout, stderr and the controlling terminal. Only
/// async-signal-safe calls, except the error message.
pub fn attach_slave(number: u32) -> Result<(), String> {
    let mut buf = [0u8; 32];
    let path = slave_path(number, &mut buf);
    // SAFETY: `path` is NUL-terminated and lives in `buf` for the call.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_NOCTTY) };
    if fd < 0 {
        return Err(format!(
            "opening the terminal /dev/pts/{number}: {}",
            std::io::Error::last_os_error()
        ));
    }
    for target in 0..3 {
        // SAFETY: dup2 of a descriptor we just opened onto 0..2.
        if unsafe { libc::dup2(fd, target) } < 0 {
            return Err(format!(
                "dup2 of the terminal onto fd {target}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    if fd > 2 {
        // SAFETY: closes our extra copy; 0..2 hold the terminal now.
        unsafe { libc::close(fd) };
    }
    // SAFETY: TIOCSCTTY takes an int argument; 0 means "do not steal".
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!(
            "making /dev/pts/{number} the controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slave_paths_are_nul_terminated() {
        let mut buf = [0u8; 32];
        assert_eq!(slave_path(0, &mut buf), b"/dev/pts/0\0");
        assert_eq!(slave_path(4096, &mut buf), b"/dev/pts/4096\0");
        assert_eq!(slave_path(u32::MAX, &mut buf), b"/dev/pts/4294967295\0");
    }

    #[test]
    fn a_master_from_the_hosts_devpts_resizes() {
        // The test host's own devpts stands in for a container's.
        let master = open_master(Path::new("/")).unwrap();
        set_window_size(master.fd.as_raw_fd(), 33, 101).unwrap();
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into a live local.
        assert_eq!(
            unsafe { libc::ioctl(master.fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) },
            0
        );
        assert_eq!((size.ws_row, size.ws_col), (33, 101));
    }
}
