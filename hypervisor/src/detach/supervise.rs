//! A helper that must not outlive the VMM it serves.
//!
//! vhost-device-vsock, for one, serves its socket again after QEMU disconnects, forever.
//! So it runs as the child of a tiny watcher process (a double-forked copy of ward that
//! never executes anything else, named `ward-watch`) which:
//! - learns the VMM's PID over a pipe once the VMM runs; if the pipe closes first (the
//!   launch failed, or ward died), it stops the helper at once;
//! - waits (pidfd + poll) until either the VMM or the helper ends, then stops the helper
//!   (SIGTERM, SIGKILL after 2 s), reaps it, and exits;
//! - has the helper die with it (PR_SET_PDEATHSIG), so killing the watcher (as
//!   `ward delete` may) also ends the helper.
//!
//! The helper is the watcher's child, so it never lingers as a zombie; the watcher itself
//! is reaped by init like every detached process.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::child::{self, ExecPlan};
use super::{double_fork, exec_outcome, pipe, Program};
use crate::{Error, Result};

/// How long the helper gets to exit after SIGTERM.
const HELPER_GRACE: Duration = Duration::from_secs(2);
/// The watcher's process name (at most 15 bytes).
const WATCHER_NAME: &[u8] = b"ward-watch\0";

/// A helper running under its watcher, not yet told which VMM to follow.
#[derive(Debug)]
pub struct Supervised {
    pub helper: i32,
    pub watcher: i32,
    go: OwnedFd,
}

impl Supervised {
    /// From now on the helper lives as long as process `vmm_pid`. Dropping a `Supervised`
    /// without calling this stops the helper.
    pub fn follow(self, vmm_pid: i32) -> Result<()> {
        let bytes = vmm_pid.to_ne_bytes();
        nix::unistd::write(&self.go, &bytes)
            .map(|_| ())
            .map_err(|e| Error::io("telling the helper watcher the VMM's PID", e.into()))
    }
}

/// Starts `program` under a watcher; returns once it has been executed.
pub fn spawn_supervised(program: &Program) -> Result<Supervised> {
    let (go_r, go_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let plan = program.plan();
    let mut keep = program.fds();
    keep.extend([go_r.as_raw_fd(), report_w.as_raw_fd(), err_w.as_raw_fd()]);
    keep.sort_unstable();
    let fds = WatcherFds {
        go: go_r.as_raw_fd(),
        report: report_w.as_raw_fd(),
        err: err_w.as_raw_fd(),
    };
    let what = format!("{} watcher", program.what());
    // The watcher joins the program's cgroup, and the helper it forks is born there.
    let cgroups = program.cgroup.fds();
    // SAFETY: `watch` only makes async-signal-safe calls on the plan and descriptors
    // prepared above (`keep` is allocated before the fork and only read after it).
    let watcher = unsafe { double_fork(&what, &cgroups, || watch(&plan, &keep, fds)) }?;
    drop((go_r, report_w, err_w));
    // SAFETY: reading from a pipe we own.
    let helper = match unsafe { child::read_i32(report_r.as_raw_fd()) } {
        Some(pid) if pid > 0 => pid,
        Some(errno) => {
            return Err(Error::Spawn {
                what: program.what().to_string(),
                source: std::io::Error::from_raw_os_error(-errno),
            })
        }
        None => {
            return Err(Error::Spawn {
                what: program.what().to_string(),
                source: std::io::Error::other("its watcher died before starting it"),
            })
        }
    };
    exec_outcome(program.what(), &err_r)?;
    Ok(Supervised {
        helper,
        watcher,
        go: go_w,
    })
}

#[derive(Clone, Copy)]
struct WatcherFds {
    /// Read end: the VMM's PID arrives here.
    go: RawFd,
    /// Write end: the helper's PID (or -errno) goes to ward here.
    report: RawFd,
    /// Write end of the helper's exec report.
    err: RawFd,
}

/// The watcher process.
///
/// # Safety
/// Only in a forked child (see `double_fork`).
unsafe fn watch(plan: &ExecPlan, keep: &[RawFd], fds: WatcherFds) -> ! {
    child::reset_signals();
    child::close_all_except(keep, plan.max_fd);
    // Nothing of ward's stdio may stay open here: a caller reading ward's output to the
    // end would wait for the VM's whole life.
    libc::dup2(plan.stdin, 0);
    libc::dup2(plan.stdin, 1);
    libc::dup2(plan.stdin, 2);
    libc::prctl(libc::PR_SET_NAME, WATCHER_NAME.as_ptr());
    let me = libc::getpid();
    let helper = libc::fork();
    if helper == 0 {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The watcher may have died before the line above took effect.
        if libc::getppid() != me {
            libc::_exit(1);
        }
        child::exec(plan, fds.err);
    }
    libc::close(fds.err);
    let report = if helper < 0 {
        -*libc::__errno_location()
    } else {
        helper
    };
    child::write_i32(fds.report, report);
    libc::close(fds.report);
    if helper < 0 {
        libc::_exit(1);
    }
    // The helper has its own copies; the watcher needs none of them but the go pipe.
    child::close_all_except(&[fds.go], plan.max_fd);
    let reaped = match child::read_i32(fds.go) {
        Some(vmm) if vmm > 0 => wait_either(vmm, helper),
        _ => false,
    };
    if !reaped {
        stop(helper);
    }
    libc::_exit(0)
}

/// Blocks until process `vmm` or our child `helper` ends; true if it reaped the helper.
///
/// # Safety
/// Only in the forked watcher.
unsafe fn wait_either(vmm: i32, helper: i32) -> bool {
    let vmm_fd = libc::syscall(libc::SYS_pidfd_open, vmm, 0) as RawFd;
    if vmm_fd < 0 && *libc::__errno_location() == libc::ESRCH {
        return false;
    }
    let helper_fd = libc::syscall(libc::SYS_pidfd_open, helper, 0) as RawFd;
    if vmm_fd >= 0 && helper_fd >= 0 {
        let mut fds = [
            libc::pollfd {
                fd: vmm_fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: helper_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        while libc::poll(fds.as_mut_ptr(), 2, -1) < 0 && *libc::__errno_location() == libc::EINTR {}
        return false;
    }
    // No pidfds (Linux before 5.3): look twice a second.
    loop {
        if libc::waitpid(helper, std::ptr::null_mut(), libc::WNOHANG) == helper {
            return true;
        }
        if libc::kill(vmm, 0) < 0 && *libc::__errno_location() == libc::ESRCH {
            return false;
        }
        sleep_ms(500);
    }
}

/// SIGTERM, up to [`HELPER_GRACE`] to exit, then SIGKILL; reaps the helper.
///
/// # Safety
/// Only in the forked watcher; `helper` must be its unreaped child.
unsafe fn stop(helper: i32) {
    libc::kill(helper, libc::SIGTERM);
    let steps = HELPER_GRACE.as_millis() / 20;
    for _ in 0..steps {
        if libc::waitpid(helper, std::ptr::null_mut(), libc::WNOHANG) == helper {
            return;
        }
        sleep_ms(20);
    }
    libc::kill(helper, libc::SIGKILL);
    while libc::waitpid(helper, std::ptr::null_mut(), 0) < 0
        && *libc::__errno_location() == libc::EINTR
    {}
}

/// # Safety
/// Async-signal-safe; callable anywhere.
unsafe fn sleep_ms(ms: i64) {
    let ts = libc::timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    };
    libc::nanosleep(&ts, std::ptr::null_mut());
}
