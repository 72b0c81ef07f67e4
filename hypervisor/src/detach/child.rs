//! Code that runs between `fork` and `execve` (or `_exit`) in a copy of a possibly
//! multi-threaded `ward`: only async-signal-safe libc calls, no allocation, no locks, no
//! panics. Everything it needs is prepared by the parent as plain numbers and pointers
//! ([`ExecPlan`]).

use std::os::fd::RawFd;

use libc::{c_char, c_int};

use crate::jail::Privileges;

/// At most this many extra descriptors are handed to a program (as fds 3, 4, ...).
pub const MAX_PASS: usize = 8;
/// The parent moves every descriptor a child will rearrange to this number or above, and
/// the child only ever targets numbers below it, so a `dup2` never clobbers a source.
pub const FIRST_SOURCE_FD: RawFd = 16;

/// A program ready to be executed after `fork`.
#[derive(Clone, Copy)]
pub struct ExecPlan {
    pub path: *const c_char,
    pub argv: *const *const c_char,
    pub envp: *const *const c_char,
    pub cwd: *const c_char,
    pub stdin: RawFd,
    pub output: RawFd,
    pub pass: [RawFd; MAX_PASS],
    pub npass: usize,
    /// Where closing descriptors one by one stops when close_range(2) is missing.
    pub max_fd: RawFd,
    /// What the program may keep of ward's privileges.
    pub privileges: Privileges,
}

/// Executes `plan` in the current (forked) process. On failure the errno goes to
/// `err_fd` as 4 bytes and the process exits with 127.
///
/// # Safety
/// Only in a forked child; `plan`'s pointers must point into memory of the parent at the
/// time of the fork (copied with the address space) and its fds must be open.
pub unsafe fn exec(plan: &ExecPlan, err_fd: RawFd) -> ! {
    reset_signals();
    if libc::dup2(plan.stdin, 0) < 0 || libc::dup2(plan.output, 1) < 0 {
        fail(err_fd);
    }
    if libc::dup2(plan.output, 2) < 0 {
        fail(err_fd);
    }
    let mut target: RawFd = 3;
    for fd in plan.pass.iter().take(plan.npass) {
        if libc::dup2(*fd, target) < 0 {
            fail(err_fd);
        }
        target += 1;
    }
    // The error pipe stays open across the rearranging and closes itself on exec, which
    // is how the parent learns that exec succeeded.
    if libc::dup2(err_fd, target) < 0 || libc::fcntl(target, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
        fail(err_fd);
    }
    let err_fd = target;
    close_range(err_fd + 1, RawFd::MAX, plan.max_fd);
    if libc::chdir(plan.cwd) < 0 {
        fail(err_fd);
    }
    if !crate::jail::restrict(plan.privileges) {
        fail(err_fd);
    }
    libc::execve(plan.path, plan.argv, plan.envp);
    fail(err_fd)
}

/// Reports errno on `fd` and exits.
///
/// # Safety
/// Only in a forked child.
pub unsafe fn fail(fd: RawFd) -> ! {
    let errno = *libc::__errno_location();
    write_i32(fd, errno);
    libc::_exit(127)
}

/// The signal state a fresh program expects: nothing blocked, nothing ignored (ignored
/// dispositions survive exec; ward's may ignore SIGPIPE).
///
/// # Safety
/// Only in a forked child.
pub unsafe fn reset_signals() {
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // Fails harmlessly for numbers libc reserves.
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Closes every descriptor from 3 up except those in `keep` (sorted ascending).
///
/// # Safety
/// Only in a forked child: it closes descriptors other code may believe open.
pub unsafe fn close_all_except(keep: &[RawFd], max_fd: RawFd) {
    let mut low: RawFd = 3;
    for &fd in keep {
        if fd > low {
            close_range(low, fd - 1, max_fd);
        }
        if fd >= low {
            low = fd + 1;
        }
    }
    close_range(low, RawFd::MAX, max_fd);
}

/// close_range(2), or one close at a time up to `max_fd` on kernels before 5.9.
///
/// # Safety
/// Closes descriptors other code may believe open.
pub unsafe fn close_range(low: RawFd, high: RawFd, max_fd: RawFd) {
    if low > high {
        return;
    }
    if libc::syscall(libc::SYS_close_range, low as u32, high as u32, 0u32) == 0 {
        return;
    }
    let mut fd = low;
    while fd <= high && fd <= max_fd {
        libc::close(fd);
        fd += 1;
    }
}

/// Writes a native-endian i32, retrying on EINTR; errors are ignored (nothing to tell).
///
/// # Safety
/// `fd` must be a descriptor this process may write to.
pub unsafe fn write_i32(fd: RawFd, value: c_int) {
    let bytes = value.to_ne_bytes();
    loop {
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        if n >= 0 || *libc::__errno_location() != libc::EINTR {
            return;
        }
    }
}

/// Reads a native-endian i32; `None` on end of file or error.
///
/// # Safety
/// `fd` must be a descriptor this process may read from.
pub unsafe fn read_i32(fd: RawFd) -> Option<c_int> {
    let mut bytes = [0u8; 4];
    let mut got = 0usize;
    while got < bytes.len() {
        let n = libc::read(fd, bytes.as_mut_ptr().add(got).cast(), bytes.len() - got);
        if n > 0 {
            got += n as usize;
        } else if n == 0 || *libc::__errno_location() != libc::EINTR {
            return None;
        }
    }
    Some(c_int::from_ne_bytes(bytes))
}
