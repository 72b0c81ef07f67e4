//! Starting a container process: the fork/exec machinery.
//!
//! Process model (both for a container's init and for an exec):
//!
//! ```text
//! agent (guest PID 1, multi-threaded)
//!   └─ fork → intermediate: closes every fd it does not need, joins the cgroup, setns()
//!             into the namespaces given by path (user first), for an init makes a new user
//!             namespace (reports `UserNamespace`, waits until the agent has written
//!             uid_map/gid_map), unshare()s the other new namespaces (PID included), then
//!        └─ fork → container process: PID 1 of the new PID namespace. Reports its PID
//!                  through the intermediate (`Pid`), which then exits; the orphan is
//!                  reparented to the agent, which reaps it like every other child.
//!                  init: builds the rootfs, pivot_root, reports `Ready`, blocks on the
//!                  control pipe until StartContainer sends START;
//!                  exec: chroots into the init's root;
//!                  both: rlimits, [seccomp], user, capabilities, no_new_privs, cwd,
//!                  signals reset, every fd but 0-2 close-on-exec, [seccomp], execve
//!                  (the seccomp filter is loaded at one of the two places, see
//!                  `exec_program`). The report pipe is close-on-exec, so the agent reads
//!                  EOF on success, or an `Error`.
//! ```
//!
//! Two forks because a new PID namespace only applies to children of the caller, and
//! because a user namespace's maps must be written from outside it while it exists.
//!
//! Fork safety: the children run on a copy of a multi-threaded process. They never log
//! (the logger's mutex may be held by another thread at fork time), never touch std's
//! stdout/stderr locks, only use data the agent prepared before fork (C strings, open
//! fds), and end in `_exit` or `execve` (no destructors, no atexit). glibc's fork resets
//! malloc's locks in the child, so allocating (formatting an error message) is safe.
//! A panic is caught and reported like any error.
//!
//! Why not youki's libcontainer: it keeps per-container state and a notify socket on disk
//! and waits (waitpid) for its own intermediate processes itself, which races with the
//! agent's reaper — as PID 1 the agent must be the only one collecting exit statuses.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Gid, Uid};
use oci_spec::runtime::LinuxNamespaceType;
use thiserror::Error;

use super::caps::{self, CapsPlan};
use super::command::{self, Command};
use super::hooks::{self, GuestHooks};
use super::namespaces::{clone_flag, proc_name, NamespacePlan};
use super::rlimits::{self, Rlimit};
use super::rootfs::{self, RootfsPlan};
use super::seccomp::{self, Filter};
use super::sync::{self, Report, SyncError, MAPS_WRITTEN, START};
use super::user::UserPlan;
use crate::process::ChildStdio;
use crate::reaper::{ExitCell, Reaper};

#[derive(Debug, Error)]
pub enum SpawnError {
    #[error("creating a pipe: {0}")]
    Pipe(nix::Error),
    #[error("fork: {0}")]
    Fork(nix::Error),
    #[error("writing {file} of the new user namespace: {source}")]
    IdMap {
        file: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Sync(#[from] SyncError),
    /// Building the container failed in the child; the child's own words.
    #[error("{0}")]
    Setup(String),
    /// The program could not be started; the child's own words.
    #[error("{0}")]
    Exec(String),
    #[error("the container process exited before it was ready ({0})")]
    Died(String),
    #[error("the container process sent {0:?} out of turn")]
    Unexpected(Report),
}

/// What the process does right before execve (an init: after START).
#[derive(Debug, Clone)]
pub struct ProcessSetup {
    pub command: Command,
    pub user: UserPlan,
    /// None: the spec says nothing about capabilities, the process keeps what it has.
    pub caps: Option<CapsPlan>,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    /// `process.terminal`: stdio is a terminal of the container's devpts.
    pub terminal: bool,
    /// The container's `linux.seccomp`, compiled (an exec gets its container's).
    pub seccomp: Option<Arc<Filter>>,
}

/// A container's init: new namespaces and a rootfs.
pub struct InitSetup {
    pub namespaces: NamespacePlan,
    /// The namespaces to join, opened by the agent (same order as `namespaces.join`).
    pub join: Vec<(LinuxNamespaceType, OwnedFd)>,
    /// uid_map and gid_map text for a new user namespace.
    pub id_maps: Option<(String, String)>,
    pub rootfs: RootfsPlan,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    /// createContainer and startContainer hooks, run by the init itself.
    pub hooks: GuestHooks,
}

/// An exec: the container init's namespaces and root.
pub struct ExecSetup {
    /// Namespaces of the init that differ from the agent's, user first.
    pub join: Vec<(LinuxNamespaceType, OwnedFd)>,
    /// /proc/<init>/root, opened by the agent.
    pub root: OwnedFd,
}

pub enum Kind<'a> {
    Init(&'a InitSetup),
    Exec(&'a ExecSetup),
}

/// The agent's hold on a started child.
pub struct Spawned {
    pub pid: i32,
    pub exit: Arc<ExitCell>,
    /// Report pipe, read end: an init's exec result arrives here after START.
    pub report: File,
    /// Control pipe, write end: START goes here.
    pub control: File,
}

/// Fds the children use, owned by the agent until the fork.
pub struct ChildFds {
    pub stdio: ChildStdio,
    /// The container cgroup's cgroup.procs, open for writing.
    pub cgroup_procs: File,
}

/// Forks the container process and waits until it is ready (init: rootfs built, waiting
/// for START) or has exec'd (exec). On error every child is killed.
pub fn spawn(
    kind: Kind<'_>,
    process: &ProcessSetup,
    fds: ChildFds,
    reaper: &Reaper,
    deadline: Instant,
) -> Result<Spawned, SpawnError> {
    let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
    let (control_r, control_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
    let mut report = File::from(report_r);
    let mut control = File::from(control_w);

    let expectation = reaper.expect();
    // SAFETY: the child only runs `intermediate`, which follows the fork-safety rules in
    // the module comment and ends in _exit.
    let fork = unsafe { nix::unistd::fork() }.map_err(SpawnError::Fork)?;
    let intermediate_pid = match fork {
        ForkResult::Child => {
            let code = intermediate(&kind, process, &fds, &report_w, &control_r);
            // SAFETY: _exit ends the child without running the parent's destructors or
            // atexit handlers on the copied state.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child.as_raw(),
    };
    let intermediate_exit = expectation.watch(intermediate_pid);
    // The children's ends: the agent must not keep them, or EOF never comes.
    drop(report_w);
    drop(control_r);
    drop(fds);

    let mut pid: Option<(i32, Arc<ExitCell>)> = None;
    let outcome = (|| -> Result<(), SpawnError> {
        loop {
            let next = sync::read_report(&mut report, deadline)?;
            match (next, &kind) {
                (Some(Report::UserNamespace), Kind::Init(init)) => {
                    write_id_maps(intermediate_pid, init.id_maps.as_ref())?;
                    use std::io::Write;
                    // A failed write shows up as the child's error report or EOF.
                    let _ = control.write_all(&[MAPS_WRITTEN]);
                }
                (Some(Report::Pid(child)), _) if pid.is_none() => {
                    pid = Some((child, expectation.watch(child)));
                }
                (Some(Report::Ready), Kind::Init(_)) if pid.is_some() => return Ok(()),
                (None, Kind::Exec(_)) if pid.is_some() => return Ok(()), // exec'd
                (Some(Report::Error(message)), Kind::Init(_)) => {
                    return Err(SpawnError::Setup(message))
                }
                (Some(Report::Error(message)), Kind::Exec(_)) => {
                    return Err(SpawnError::Exec(message))
                }
                (None, _) => {
                    let cell = pid.as_ref().map_or(&intermediate_exit, |(_, cell)| cell);
                    let status = cell
                        .wait_timeout(Duration::from_secs(2))
                        .map_or("no exit status".to_string(), |s| s.to_string());
                    return Err(SpawnError::Died(status));
                }
                (Some(other), _) => return Err(SpawnError::Unexpected(other)),
            }
        }
    })();
    drop(expectation);
    match (outcome, pid) {
        (Ok(()), Some((pid, exit))) => Ok(Spawned {
            pid,
            exit,
            report,
            control,
        }),
        (Ok(()), None) => Err(SpawnError::Died("no PID reported".into())),
        (Err(e), pid) => {
            // Kill what still runs. A process whose cell holds a status has been reaped and
            // its PID may be someone else's by now, so it is left alone.
            let mut victims = vec![(intermediate_pid, intermediate_exit)];
            victims.extend(pid);
            for (pid, exit) in victims {
                if exit.get().is_none() {
                    // SAFETY: kill has no memory arguments; `pid` is our child, not reaped.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            Err(e)
        }
    }
}

/// Releases a created init and waits for its exec: Ok once the report pipe closes (exec
/// succeeded), the child's error otherwise. `terminal` is the number of the init's
/// terminal slave, when it has one.
pub fn start(
    spawned: &mut Spawned,
    terminal: Option<u32>,
    deadline: Instant,
) -> Result<(), SpawnError> {
    use std::io::Write;
    if let Err(e) = spawned.control.write_all(&sync::start_message(terminal)) {
        // EPIPE: the init is gone; its report (if any) says why.
        if let Ok(Some(Report::Error(message))) = sync::read_report(&mut spawned.report, deadline) {
            return Err(SpawnError::Exec(message));
        }
        return Err(SpawnError::Died(format!("it cannot be released: {e}")));
    }
    match sync::read_report(&mut spawned.report, deadline)? {
        None => Ok(()),
        Some(Report::Error(message)) => Err(SpawnError::Exec(message)),
        Some(other) => Err(SpawnError::Unexpected(other)),
    }
}

fn write_id_maps(pid: i32, maps: Option<&(String, String)>) -> Result<(), SpawnError> {
    let Some((uid_map, gid_map)) = maps else {
        return Ok(());
    };
    for (file, text) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .map_err(|source| SpawnError::IdMap { file, source })?;
    }
    Ok(())
}

// ---- Everything below runs in forked children. -----------------------------------------

fn err(what: &str, e: nix::Error) -> String {
    format!("{what}: {}", e.desc())
}

/// The report pipe of the forked child this process is, for the panic hook (-1: none).
static CHILD_REPORT_FD: AtomicI32 = AtomicI32::new(-1);

/// Called by the panic hook in a forked child: the panic becomes the child's error report
/// (release builds abort right after the hook, so this is the only chance to say why).
pub fn report_panic(message: &str) {
    let fd = CHILD_REPORT_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: the fd was a live descriptor of this child when stored, and nothing in
        // the child closes it.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        sync::send(
            &fd,
            &Report::Error(format!("the agent's child process panicked: {message}")),
        );
    }
}

/// Runs `body`, turning an error into an `Error` report (a panic is reported by the panic
/// hook); returns the exit code.
fn run_child(report: &OwnedFd, body: impl FnOnce() -> Result<(), String>) -> i32 {
    CHILD_REPORT_FD.store(report.as_raw_fd(), Ordering::Relaxed);
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(message)) => {
            sync::send(report, &Report::Error(message));
            1
        }
        Err(_) => 1,
    }
}

fn intermediate(
    kind: &Kind<'_>,
    process: &ProcessSetup,
    fds: &ChildFds,
    report: &OwnedFd,
    control: &OwnedFd,
) -> i32 {
    run_child(report, || {
        let mut keep = vec![
            report.as_raw_fd(),
            control.as_raw_fd(),
            fds.cgroup_procs.as_raw_fd(),
        ];
        if let ChildStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } = &fds.stdio
        {
            keep.extend([stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()]);
        }
        let joins = match kind {
            Kind::Init(init) => &init.join,
            Kind::Exec(exec) => {
                keep.push(exec.root.as_raw_fd());
                &exec.join
            }
        };
        keep.extend(joins.iter().map(|(_, fd)| fd.as_raw_fd()));
        // Other containers' pipe ends and sockets must not live on in this process.
        close_fds_except(&mut keep);

        let mut procs = &fds.cgroup_procs;
        use std::io::Write;
        procs
            .write_all(b"0")
            .map_err(|e| format!("joining the container's cgroup: {e}"))?;
        for (typ, fd) in joins {
            nix::sched::setns(fd, clone_flag(*typ))
                .map_err(|e| err(&format!("joining the {} namespace", proc_name(*typ)), e))?;
        }
        if let Kind::Init(init) = kind {
            new_namespaces(&init.namespaces, report, control)?;
        }
        // SAFETY: this process is single-threaded (a fork child); the grandchild runs
        // `container_process`, which ends in execve or _exit.
        match unsafe { nix::unistd::fork() }.map_err(|e| err("fork", e))? {
            ForkResult::Child => {
                let code = container_process(kind, process, fds, report, control);
                // SAFETY: see `spawn`.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                sync::send(report, &Report::Pid(child.as_raw()));
                Ok(())
            }
        }
    })
}

fn new_namespaces(plan: &NamespacePlan, report: &OwnedFd, control: &OwnedFd) -> Result<(), String> {
    if plan.new_user {
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
            .map_err(|e| err("creating the user namespace", e))?;
        sync::send(report, &Report::UserNamespace);
        if sync::wait_control(control) != Some(MAPS_WRITTEN) {
            return Err("the agent did not write the user namespace's ID maps".into());
        }
        // Become root of the new namespace, if root is mapped, to build the rootfs as
        // root; if it is not, the process stays the overflow ID and mounts still work.
        let _ = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
        let _ = nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
    }
    nix::sched::unshare(plan.unshare).map_err(|e| err("creating the namespaces", e))
}

fn container_process(
    kind: &Kind<'_>,
    process: &ProcessSetup,
    fds: &ChildFds,
    report: &OwnedFd,
    control: &OwnedFd,
) -> i32 {
    run_child(report, || {
        if let ChildStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } = &fds.stdio
        {
            install_stdio([stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()])?;
        }
        // Its own session: signals for the agent's process group or terminal never reach
        // it. Fails only if it already leads one, which is fine.
        let _ = nix::unistd::setsid();
        match kind {
            Kind::Init(init) => {
                if init.namespaces.new_net() {
                    crate::netdev::loopback_up()
                        .map_err(|e| format!("bringing up the loopback interface: {e}"))?;
                }
                // The init's PID as the agent sees it, for the hooks' state: /proc is
                // still the agent's until pivot_root.
                let pid = agent_side_pid()?;
                rootfs::prepare(&init.rootfs)?;
                if let Some(name) = &init.hostname {
                    nix::unistd::sethostname(name).map_err(|e| err("sethostname", e))?;
                }
                if let Some(name) = &init.domainname {
                    set_domainname(name)?;
                }
                rootfs::finish(&init.rootfs)?;
                if !init.hooks.create_container.is_empty() {
                    let state = hooks::state(&init.hooks, "creating", pid)?;
                    hooks::run("createContainer", &init.hooks.create_container, &state)?;
                }
                super::command::check_exists(&process.command)?;
                sync::send(report, &Report::Ready);
                if sync::wait_control(control) != Some(START) {
                    // The agent dropped the container before starting it.
                    // SAFETY: see `spawn`.
                    unsafe { libc::_exit(0) }
                }
                if let ChildStdio::Terminal { .. } = fds.stdio {
                    let number = sync::read_terminal_number(control)
                        .ok_or("the agent sent START without the terminal's number")?;
                    crate::terminal::attach_slave(number)?;
                }
                if !init.hooks.start_container.is_empty() {
                    let state = hooks::state(&init.hooks, "created", pid)?;
                    hooks::run("startContainer", &init.hooks.start_container, &state)?;
                }
            }
            Kind::Exec(exec) => {
                nix::unistd::fchdir(exec.root.as_raw_fd())
                    .map_err(|e| err("entering the container's root", e))?;
                nix::unistd::chroot(".").map_err(|e| err("chroot into the container", e))?;
                if let ChildStdio::Terminal {
                    number: Some(number),
                } = fds.stdio
                {
                    crate::terminal::attach_slave(number)?;
                }
            }
        }
        match exec_program(process) {
            Err(message) => Err(message),
            Ok(never) => match never {},
        }
    })
}

/// This process's PID in the agent's PID namespace (it is 1 in its own).
fn agent_side_pid() -> Result<i32, String> {
    let link = std::fs::read_link("/proc/self").map_err(|e| format!("reading /proc/self: {e}"))?;
    link.to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("/proc/self points to {}", link.display()))
}

fn set_domainname(name: &str) -> Result<(), String> {
    // SAFETY: setdomainname reads `len` bytes from a live buffer.
    let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if rc != 0 {
        return Err(format!(
            "setdomainname: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The last steps, in the order the kernel's rules need, then execve.
///
/// The seccomp filter goes where runc puts it. With no_new_privs it is the very last step
/// before execve, so that the profile need not allow what the agent's own steps call.
/// Without, loading it needs CAP_SYS_ADMIN, which the UID change below clears from the
/// effective set: it is loaded after the steps runc takes before its own load (rlimits,
/// oom_score_adj) and before the capabilities and IDs change, so the profile must allow
/// what follows (capset, prctl, setgroups, setres[ug]id, umask, chdir, rt_sigaction,
/// rt_sigprocmask, close_range, execve), as it must under runc.
fn exec_program(p: &ProcessSetup) -> Result<Infallible, String> {
    rlimits::apply(&p.rlimits)?;
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("setting oom_score_adj to {adj}: {e}"))?;
    }
    if !p.no_new_privileges {
        if let Some(filter) = &p.seccomp {
            seccomp::load(filter)?;
        }
    }
    if let Some(caps) = &p.caps {
        caps::apply_bounding(caps)?;
    }
    // Keep the permitted capabilities across the UID change; the effective set is
    // rebuilt from them below.
    prctl(libc::PR_SET_KEEPCAPS, 1, "PR_SET_KEEPCAPS")?;
    set_ids(&p.user)?;
    prctl(libc::PR_SET_KEEPCAPS, 0, "PR_SET_KEEPCAPS")?;
    if let Some(caps) = &p.caps {
        caps::apply_sets(caps)?;
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(
        p.user.umask.unwrap_or(0o022),
    ));
    nix::unistd::chdir(p.command.cwd.as_c_str()).map_err(|e| {
        format!(
            "chdir to cwd {:?} set in config.json failed: {}",
            p.command.cwd,
            e.desc()
        )
    })?;
    if p.no_new_privileges {
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")?;
    }
    reset_signals();
    // Nothing but 0, 1, 2 survives the exec; the report pipe closing tells the agent the
    // exec succeeded.
    close_range(
        3,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
    );
    if p.no_new_privileges {
        if let Some(filter) = &p.seccomp {
            seccomp::load(filter)?;
        }
    }
    Err(command::exec(&p.command))
}

fn prctl(option: libc::c_int, value: libc::c_ulong, name: &str) -> Result<(), String> {
    // SAFETY: these prctl options take integer arguments only.
    let rc = unsafe {
        libc::prctl(
            option,
            value,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(format!("prctl {name}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_ids(user: &UserPlan) -> Result<(), String> {
    let groups: Vec<Gid> = user
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        // A user namespace whose setgroups is denied: only an empty list could be asked.
        if !(groups.is_empty() && e == nix::Error::EPERM) {
            return Err(err(&format!("setgroups {:?}", user.additional_gids), e));
        }
    }
    let gid = Gid::from_raw(user.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| err(&format!("setgid {}", user.gid), e))?;
    let uid = Uid::from_raw(user.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| err(&format!("setuid {}", user.uid), e))
}

/// Moves the pipe ends onto 0, 1, 2 (through fresh high fds, so that no end is overwritten
/// before it is copied).
fn install_stdio(ends: [RawFd; 3]) -> Result<(), String> {
    let mut high = [0 as RawFd; 3];
    for (slot, fd) in high.iter_mut().zip(ends) {
        // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we hold.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return Err(format!(
                "dup of a stdio pipe: {}",
                std::io::Error::last_os_error()
            ));
        }
        *slot = dup;
    }
    for (target, fd) in high.iter().enumerate() {
        // SAFETY: dup2 onto 0..2; the copy on the target is not close-on-exec.
        if unsafe { libc::dup2(*fd, target as RawFd) } < 0 {
            return Err(format!(
                "dup2 onto fd {target}: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: closes the temporary copy we made above.
        unsafe { libc::close(*fd) };
    }
    Ok(())
}

/// The agent ignores SIGPIPE and blocks SIGCHLD; the program must start with defaults.
/// Dispositions of caught signals reset themselves at exec, ignored ones do not.
fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: SIG_DFL is always a valid disposition; glibc refuses (EINVAL) the
        // signals it reserves, which is harmless.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let empty = nix::sys::signal::SigSet::empty();
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&empty),
        None,
    );
}

fn close_range(first: libc::c_uint, last: libc::c_uint, flags: libc::c_uint) {
    // SAFETY: close_range only acts on the calling process's descriptor table; every
    // descriptor it closes belongs to objects this child never drops (it ends in _exit or
    // execve).
    unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
}

/// Closes every descriptor from 3 up except those in `keep`.
fn close_fds_except(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut next: libc::c_uint = 3;
    for &fd in keep.iter() {
        let Ok(fd) = libc::c_uint::try_from(fd) else {
            continue;
        };
        if fd < next {
            continue;
        }
        if fd > next {
            close_range(next, fd - 1, 0);
        }
        next = fd + 1;
    }
    close_range(next, libc::c_uint::MAX, 0);
}
