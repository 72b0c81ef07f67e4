//! The console keeper of a QEMU VM: QEMU writes the guest's serial console into a pipe,
//! and this process, forked from ward (no exec), appends what it reads to the console log
//! and keeps the log under a size limit (issue 14: a guest flooding its console must not
//! fill /run). When the log would pass the limit it is emptied and starts again with a
//! note, so it keeps the latest output, which is what ward shows after a failure.
//!
//! It ends by itself at end of file, when QEMU (the only other holder of the pipe) is
//! gone. It keeps no other descriptor of ward's (no lock, no terminal) and no privilege.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{child, double_fork, high_fd, max_fd, pipe};
use crate::jail::{CgroupJoin, Privileges};
use crate::{Error, Result};

/// The most a QEMU console log holds: as ward-vmm's (hypervisor/vmm serial.rs).
pub const CONSOLE_LOG_LIMIT: u64 = 1 << 20;

/// What starts the log after it was emptied for reaching its limit.
const TRUNCATED: &[u8] =
    b"[ward: the console log reached its size limit; earlier output was dropped]\n";

/// A started keeper: the pipe's write end for QEMU, and the keeper's PID.
pub struct ConsoleKeeper {
    pub writer: OwnedFd,
    pub pid: i32,
}

/// Starts a keeper appending to `log` (created 0600 if missing), at most `limit` bytes, in
/// the cgroup `cgroup` opened.
pub fn spawn_console_keeper(log: &Path, limit: u64, cgroup: &CgroupJoin) -> Result<ConsoleKeeper> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|e| Error::io(format!("opening the console log {}", log.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("reading the size of {}", log.display()), e))?
        .len();
    let file = high_fd(file.into())?;
    let devnull =
        std::fs::File::open("/dev/null").map_err(|e| Error::io("opening /dev/null", e))?;
    let devnull = high_fd(devnull.into())?;
    let (reader, writer) = pipe()?;
    let (r, f, null) = (reader.as_raw_fd(), file.as_raw_fd(), devnull.as_raw_fd());
    let mut keep = [r, f, null];
    keep.sort_unstable();
    let max = max_fd();
    let cgroups = cgroup.fds();
    // SAFETY: the keeper only makes raw system calls (dup2, close, prctl, capset, read,
    // write, ftruncate, _exit) on descriptors and memory prepared before the fork.
    let pid = unsafe {
        double_fork("the console keeper", &cgroups, move || {
            keep_log(r, f, null, &keep, max, len, limit);
        })
    }?;
    drop(reader);
    Ok(ConsoleKeeper { writer, pid })
}

/// The keeper's whole life.
///
/// # Safety
/// Only in a forked child.
unsafe fn keep_log(
    r: RawFd,
    log: RawFd,
    null: RawFd,
    keep: &[RawFd],
    max: RawFd,
    len: u64,
    limit: u64,
) {
    child::reset_signals();
    for fd in 0..3 {
        libc::dup2(null, fd);
    }
    child::close_all_except(keep, max);
    if !crate::jail::restrict(Privileges::None) {
        libc::_exit(1);
    }
    let mut state = Capped { log, len, limit };
    let mut buf = [0u8; 4096];
    loop {
        let n = libc::read(r, buf.as_mut_ptr().cast(), buf.len());
        if n == 0 {
            libc::_exit(0);
        }
        if n < 0 {
            if *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(1);
        }
        state.append(&buf[..n as usize]);
    }
}

/// The log file, its length, and its limit.
struct Capped {
    log: RawFd,
    len: u64,
    limit: u64,
}

impl Capped {
    /// Appends `bytes`, emptying the log first if they would take it past its limit.
    ///
    /// # Safety
    /// `self.log` is an open descriptor of a regular file opened for appending.
    unsafe fn append(&mut self, mut bytes: &[u8]) {
        if self.len.saturating_add(bytes.len() as u64) > self.limit {
            // A write errors out only when the disk is full: the log is best effort.
            libc::ftruncate(self.log, 0);
            self.len = 0;
            self.write_all(TRUNCATED);
            let room = self.limit.saturating_sub(self.len) as usize;
            if bytes.len() > room {
                bytes = &bytes[bytes.len() - room..];
            }
        }
        self.write_all(bytes);
    }

    unsafe fn write_all(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = libc::write(self.log, bytes.as_ptr().cast(), bytes.len());
            if n < 0 {
                if *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                return;
            }
            self.len += n as u64;
            bytes = &bytes[n as usize..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    /// A flood through the pipe: the log never passes the limit, ends with the latest
    /// bytes, and the keeper ends when the writer closes.
    #[test]
    fn a_flood_stays_within_the_limit_and_the_keeper_ends_with_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, vec![b'#'; 500]).unwrap();
        let limit = 10_000;
        let keeper = spawn_console_keeper(&log, limit, &CgroupJoin::default()).unwrap();
        let mut writer = std::fs::File::from(keeper.writer);
        let mut max = 0;
        for i in 0..200u32 {
            let chunk = vec![b'a' + (i % 26) as u8; 997];
            writer.write_all(&chunk).unwrap();
            max = max.max(std::fs::metadata(&log).unwrap().len());
        }
        writer.write_all(b"\nthe end\n").unwrap();
        drop(writer);
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::ProcessRecord::of("console", keeper.pid).is_some_and(|r| r.is_alive()) {
            assert!(Instant::now() < deadline, "the keeper outlived its writer");
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read(&log).unwrap();
        assert!(max <= limit && text.len() as u64 <= limit, "grew to {max}");
        assert!(text.starts_with(TRUNCATED));
        assert!(text.ends_with(b"\nthe end\n"));
        assert!(
            !text.contains(&b'#'),
            "output from before the limit survived"
        );
    }
}
