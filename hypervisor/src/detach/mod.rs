//! Starting the host processes a VM is made of so that they outlive the `ward` command
//! that starts them, without ever becoming its zombies.
//!
//! Every helper is started by a double fork: `ward` forks an intermediate process, which
//! starts a new session, forks the helper and exits at once; `ward` reaps the intermediate
//! right away, so the helper's parent becomes init (or the nearest subreaper, e.g. a
//! containerd shim), which reaps it whenever it ends. That holds even when the launching
//! `ward` lives long (`ward run` stays as the stdio relay), and it is why QEMU runs without
//! `-daemonize`: its stderr stays in our log file for its whole life rather than going to
//! /dev/null after its own daemonizing, and its start-up failures are seen the same way as
//! every other helper's (the process ends before its control socket answers).
//!
//! The helper gets: a new session (no signals from ward's terminal), stdin /dev/null,
//! stdout and stderr to a log file, the descriptors it is explicitly handed and no other,
//! default signal dispositions, and its run directory as working directory. Given a
//! [`CgroupJoin`], the intermediate process joins the sandbox's host cgroup before it
//! forks, so the helper (and whatever it starts) is in it from its first instruction.

mod child;
mod console;
mod supervise;

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::c_char;

pub use console::{spawn_console_keeper, CONSOLE_LOG_LIMIT};
pub use supervise::{spawn_supervised, Supervised};

pub use crate::jail::{CgroupJoin, Privileges};
use crate::{Error, Result};
use child::{ExecPlan, FIRST_SOURCE_FD, MAX_PASS};

/// A program with its arguments, environment and descriptors, prepared before any fork so
/// that the forked child only has to make system calls.
pub struct Program {
    what: String,
    path: CString,
    cwd: CString,
    // The strings own the memory the pointer arrays point into.
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    stdin: OwnedFd,
    output: OwnedFd,
    pass: Vec<OwnedFd>,
    privileges: Privileges,
    cgroup: CgroupJoin,
}

impl Program {
    /// `what` names the program in errors; `path` must be the program's full path (the
    /// child does no PATH search); its output goes to `log` (appended, created if needed).
    pub fn new<S: AsRef<OsStr>>(
        what: &str,
        path: &Path,
        args: &[S],
        cwd: &Path,
        log: &Path,
    ) -> Result<Program> {
        let cstr = |s: &OsStr| {
            CString::new(s.as_bytes())
                .map_err(|_| Error::Config(format!("{what}: argument {s:?} contains a NUL byte")))
        };
        let path_c = cstr(path.as_os_str())?;
        let mut args_c = vec![path_c.clone()];
        for arg in args {
            args_c.push(cstr(arg.as_ref())?);
        }
        let env_c: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect();
        let argv = null_terminated(&args_c);
        let envp = null_terminated(&env_c);
        let mut strings = args_c;
        strings.extend(env_c);

        let devnull =
            std::fs::File::open("/dev/null").map_err(|e| Error::io("opening /dev/null", e))?;
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening {what}'s log {}", log.display()), e))?;
        Ok(Program {
            what: what.to_string(),
            path: path_c,
            cwd: cstr(cwd.as_os_str())?,
            _strings: strings,
            argv,
            envp,
            stdin: high_fd(devnull.into())?,
            output: high_fd(output.into())?,
            pass: Vec::new(),
            privileges: Privileges::Inherit,
            cgroup: CgroupJoin::default(),
        })
    }

    /// Runs the program in the cgroup `join` opened (the default: ward's own).
    pub fn cgroup(mut self, join: &CgroupJoin) -> Result<Program> {
        self.cgroup = join.try_clone()?;
        Ok(self)
    }

    /// Runs the program with at most `privileges` (the default: ward's own).
    pub fn privileges(mut self, privileges: Privileges) -> Program {
        self.privileges = privileges;
        self
    }

    /// Hands `fd` to the program as descriptor 3, the next one as 4, and so on.
    pub fn pass_fd(&mut self, fd: OwnedFd) -> Result<RawFd> {
        if self.pass.len() >= MAX_PASS {
            return Err(Error::Config(format!(
                "{}: more than {MAX_PASS} descriptors to pass",
                self.what
            )));
        }
        self.pass.push(high_fd(fd)?);
        Ok(2 + self.pass.len() as RawFd)
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    fn plan(&self) -> ExecPlan {
        let mut pass = [-1; MAX_PASS];
        for (slot, fd) in pass.iter_mut().zip(&self.pass) {
            *slot = fd.as_raw_fd();
        }
        ExecPlan {
            path: self.path.as_ptr(),
            argv: self.argv.as_ptr(),
            envp: self.envp.as_ptr(),
            cwd: self.cwd.as_ptr(),
            stdin: self.stdin.as_raw_fd(),
            output: self.output.as_raw_fd(),
            pass,
            npass: self.pass.len(),
            max_fd: max_fd(),
            privileges: self.privileges,
        }
    }

    /// Every descriptor the plan uses, for a process that must keep them across a fork.
    fn fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.stdin.as_raw_fd(), self.output.as_raw_fd()];
        fds.extend(self.pass.iter().map(|fd| fd.as_raw_fd()));
        fds
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Moves `fd` to a number at or above [`FIRST_SOURCE_FD`], close-on-exec.
fn high_fd(fd: OwnedFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() >= FIRST_SOURCE_FD {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; the result is checked and owned by
    // the returned value alone.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, FIRST_SOURCE_FD) };
    if new < 0 {
        return Err(Error::io(
            "duplicating a descriptor",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `new` was just returned by fcntl and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A close-on-exec pipe with both ends at or above [`FIRST_SOURCE_FD`]: (read, write).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("creating a pipe", e.into()))?;
    Ok((high_fd(r)?, high_fd(w)?))
}

fn max_fd() -> RawFd {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if ok {
        limit.rlim_cur.min(1 << 20) as RawFd
    } else {
        1024
    }
}

/// What the intermediate process of [`double_fork`] reports first; the PID or an errno
/// follows.
const FORKED: i32 = 0;
const FORK_FAILED: i32 = 1;
const CGROUP_JOIN_FAILED: i32 = 2;

/// Forks twice and runs `child` in the grandchild, whose parent is then init; returns the
/// grandchild's PID once the intermediate process has been reaped. The intermediate joins
/// the cgroups whose `cgroup.procs` descriptors `cgroups` holds before it forks again, so
/// the grandchild is born in them (nothing of it ever runs outside).
///
/// # Safety
/// `child` runs in a forked copy of a possibly multi-threaded process: it may only make
/// async-signal-safe calls, must not allocate or panic, and should end with exec or `_exit`.
unsafe fn double_fork(what: &str, cgroups: &[RawFd], child: impl FnOnce()) -> Result<i32> {
    let (pid_r, pid_w) = pipe()?;
    let spawn_err = |e: std::io::Error| Error::Spawn {
        what: what.to_string(),
        source: e,
    };
    let intermediate = libc::fork();
    if intermediate < 0 {
        return Err(spawn_err(std::io::Error::last_os_error()));
    }
    if intermediate == 0 {
        libc::setsid();
        let joined = crate::jail::cgroup::join(cgroups);
        if joined != 0 {
            child::write_i32(pid_w.as_raw_fd(), CGROUP_JOIN_FAILED);
            child::write_i32(pid_w.as_raw_fd(), joined);
            libc::_exit(0);
        }
        let grandchild = libc::fork();
        if grandchild == 0 {
            child();
            libc::_exit(127);
        }
        if grandchild < 0 {
            let errno = *libc::__errno_location();
            child::write_i32(pid_w.as_raw_fd(), FORK_FAILED);
            child::write_i32(pid_w.as_raw_fd(), errno);
        } else {
            child::write_i32(pid_w.as_raw_fd(), FORKED);
            child::write_i32(pid_w.as_raw_fd(), grandchild);
        }
        libc::_exit(0);
    }
    drop(pid_w);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(intermediate), None);
    let report = child::read_i32(pid_r.as_raw_fd())
        .and_then(|stage| Some((stage, child::read_i32(pid_r.as_raw_fd())?)));
    match report {
        Some((FORKED, pid)) if pid > 0 => Ok(pid),
        Some((CGROUP_JOIN_FAILED, errno)) => Err(Error::CgroupJoin {
            what: what.to_string(),
            source: std::io::Error::from_raw_os_error(errno),
        }),
        Some((_, errno)) => Err(spawn_err(std::io::Error::from_raw_os_error(errno))),
        None => Err(spawn_err(std::io::Error::other(
            "the intermediate process died before reporting",
        ))),
    }
}

/// Waits for the exec report on `err_r`: end of file means the program runs.
fn exec_outcome(what: &str, err_r: &OwnedFd) -> Result<()> {
    // SAFETY: reading from a pipe we own.
    match unsafe { child::read_i32(err_r.as_raw_fd()) } {
        None => Ok(()),
        Some(errno) => Err(Error::Spawn {
            what: what.to_string(),
            source: std::io::Error::from_raw_os_error(errno),
        }),
    }
}

/// Starts `program` detached (see the module documentation) and returns its PID once it
/// has been executed.
pub fn spawn_detached(program: &Program) -> Result<i32> {
    let (err_r, err_w) = pipe()?;
    let plan = program.plan();
    let err_fd = err_w.as_raw_fd();
    let cgroups = program.cgroup.fds();
    // SAFETY: the child only runs `child::exec`, which makes async-signal-safe calls on
    // the plan prepared above; the plan's memory and fds, and the cgroup descriptors, live
    // in the parent until after the fork (they are copied with it).
    let pid = unsafe { double_fork(program.what(), &cgroups, move || child::exec(&plan, err_fd)) }?;
    drop(err_w);
    exec_outcome(program.what(), &err_r)?;
    Ok(pid)
}

/// The full path of `binary`: as given when it contains a slash, else from PATH.
pub fn find_binary(binary: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if binary.as_os_str().as_bytes().contains(&b'/') {
        return executable(binary).then(|| binary.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| executable(candidate))
}

#[cfg(test)]
mod tests;
