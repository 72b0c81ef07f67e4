//! Containers: the registry the RPCs act on, and the steps of each container operation.
//! The pure planning lives in `plan` and the modules it uses; syscalls in `spawn`,
//! `rootfs`, `cgroup` and `storage`.
//!
//! Built directly on nix rather than on youki's libcontainer: libcontainer keeps
//! per-container state and a notify socket on disk and waits for its own intermediate
//! processes, which races with the reaper of PID 1 (the agent must be the only one to
//! collect exit statuses) — see `spawn` for the process model used instead.

pub mod caps;
pub mod cgroup;
pub mod command;
pub mod devcgroup;
pub mod devices;
pub mod hooks;
pub mod mounts;
pub mod namespaces;
pub mod plan;
pub mod pod;
pub mod rlimits;
pub mod rootfs;
pub mod sandbox_storage;
pub mod seccomp;
pub mod spawn;
pub mod storage;
pub mod sync;
pub mod user;

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use slog::{info, warn, Logger};
use thiserror::Error;
use ttrpc::Code;
use ward_agent_protocol::agent::CreateContainerRequest;
use ward_agent_protocol::ids::{validate_id, IdError};
use ward_agent_protocol::stream::StreamHeader;

use crate::error::Coded;
use crate::process::{self, ChildStdio, Process, ProcessError, StdioEnds};
use crate::reaper::{ExitStatus, Reaper};
use crate::stream::StreamSource;
use cgroup::{Cgroup, CgroupError};
use namespaces::{proc_name, JOIN_ORDER};
use plan::PlanError;
use sandbox_storage::SandboxStorages;
use spawn::{ChildFds, ExecSetup, InitSetup, Kind, SpawnError, Spawned};
use storage::StorageError;

/// How long RemoveContainer waits for killed processes to be reaped.
const KILL_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ContainerError {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("invalid exec ID: {0}")]
    ExecId(IdError),
    #[error("container {id}: {source}")]
    Plan { id: String, source: PlanError },
    #[error("container {id}: {source}")]
    Storage { id: String, source: StorageError },
    #[error("container {id}: rootfs_guest_path {path} {reason}")]
    Rootfs {
        id: String,
        path: String,
        reason: String,
    },
    #[error("container {id}: {path} is already used by container {other}")]
    PathInUse {
        id: String,
        path: String,
        other: String,
    },
    #[error("container {id}: {source}")]
    Cgroup { id: String, source: CgroupError },
    #[error("container {id}: {what}: {source}")]
    Spawn {
        id: String,
        what: String,
        source: SpawnError,
    },
    #[error("container {id} does not exist")]
    NotFound { id: String },
    #[error("container {id} has no process {exec_id:?}")]
    NoProcess { id: String, exec_id: String },
    #[error("container {id} already exists")]
    Exists { id: String },
    #[error("container {id} already has a process {exec_id:?}")]
    ExecExists { id: String, exec_id: String },
    #[error("container {id} {why}")]
    State { id: String, why: String },
    #[error("container {id}: {source}")]
    Process { id: String, source: ProcessError },
    #[error("container {id}: {signal} is not a signal number")]
    BadSignal { id: String, signal: u32 },
    #[error("container {id}: {what}: {source}")]
    Io {
        id: String,
        what: String,
        source: io::Error,
    },
    #[error("container {id}: {what} still running {secs} s after SIGKILL")]
    Stuck { id: String, what: String, secs: u64 },
}

impl Coded for ContainerError {
    fn code(&self) -> Code {
        use ContainerError as E;
        match self {
            E::Id(_) | E::ExecId(_) | E::Plan { .. } | E::Rootfs { .. } | E::BadSignal { .. } => {
                Code::INVALID_ARGUMENT
            }
            E::Storage { source, .. } => match source {
                StorageError::Mount { .. }
                | StorageError::MountPoint { .. }
                | StorageError::Unmount { .. } => Code::INTERNAL,
                _ => Code::INVALID_ARGUMENT,
            },
            E::Cgroup { source, .. } => match source {
                CgroupError::Io { .. }
                | CgroupError::NotEmpty(..)
                | CgroupError::FreezeTimeout { .. }
                | CgroupError::DeviceProgram { .. } => Code::INTERNAL,
                CgroupError::InUse(_) => Code::FAILED_PRECONDITION,
                _ => Code::INVALID_ARGUMENT,
            },
            E::Spawn { source, .. } => match source {
                SpawnError::Exec(_) | SpawnError::Setup(_) => Code::FAILED_PRECONDITION,
                SpawnError::Sync(self::sync::SyncError::Timeout) => Code::DEADLINE_EXCEEDED,
                _ => Code::INTERNAL,
            },
            E::NotFound { .. } | E::NoProcess { .. } => Code::NOT_FOUND,
            E::Exists { .. } | E::ExecExists { .. } | E::PathInUse { .. } => Code::ALREADY_EXISTS,
            E::State { .. } => Code::FAILED_PRECONDITION,
            E::Process { source, .. } => match source {
                ProcessError::Exited { .. }
                | ProcessError::AlreadyAttached { .. }
                | ProcessError::NoTerminal { .. }
                | ProcessError::NoStderr { .. } => Code::FAILED_PRECONDITION,
                ProcessError::Signal { .. }
                | ProcessError::Pipe(_)
                | ProcessError::Terminal { .. } => Code::INTERNAL,
            },
            E::Io { .. } | E::Stuck { .. } => Code::INTERNAL,
        }
    }
}

/// Where a container's init stands between CreateContainer and StartContainer.
enum Phase {
    /// Built, blocked on the control pipe.
    Created(Spawned),
    Started,
    /// StartContainer failed (the exec failed); the init has exited.
    StartFailed,
}

/// How long a freeze or thaw may take before PauseContainer/ResumeContainer fail.
const FREEZE_PATIENCE: Duration = Duration::from_secs(10);

/// /proc/PID/cmdline's NUL-separated arguments, joined by spaces.
fn command_line(raw: &[u8]) -> String {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The parent PID from /proc/PID/stat, counting fields after the command's last ')'.
fn parent_pid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

pub struct Container {
    pub id: String,
    cgroup: Cgroup,
    /// Storage mount points, in mount order.
    storages: Vec<PathBuf>,
    /// Guest paths this container owns (rootfs, storages): no other container may use them.
    claims: Vec<PathBuf>,
    init: Arc<Process>,
    /// The init is PID 1 of its own PID namespace (see `signal_init`).
    own_pid_ns: bool,
    /// The number of the init's terminal slave, sent with START.
    init_terminal: Option<u32>,
    phase: Mutex<Phase>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Exec IDs being started, so that two ExecProcess calls cannot take the same one.
    pending_execs: Mutex<HashSet<String>>,
    /// `linux.seccomp`, compiled: the init's filter, which every exec loads too (runc's
    /// way: an exec's process object has no profile of its own).
    seccomp: Option<Arc<seccomp::Filter>>,
}

enum Slot {
    /// CreateContainer is running; the claims are reserved.
    Creating {
        claims: Vec<PathBuf>,
    },
    Ready(Arc<Container>),
}

pub struct Containers {
    slots: Mutex<HashMap<String, Slot>>,
    /// The pod's shared directory and the like, counted by the containers using them.
    sandbox_storages: Mutex<SandboxStorages>,
    reaper: Arc<Reaper>,
    log: Logger,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a map insert/remove or a swap of one value: a panic
    // cannot leave the data half-updated, so a poisoned lock is still consistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes a reservation unless the creation completed.
struct Reservation<'a> {
    containers: &'a Containers,
    id: String,
    done: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.containers.slots).remove(&self.id);
        }
    }
}

/// Undoes the side effects of a half-done CreateContainer.
struct Undo<'a> {
    storages: Vec<PathBuf>,
    /// The sandbox storages this container was counted in.
    sandbox: Option<(&'a Mutex<SandboxStorages>, String)>,
    cgroup: Option<Cgroup>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(cgroup) = &self.cgroup {
            let _ = cgroup.signal_all(libc::SIGKILL);
            let _ = cgroup.remove(Duration::from_secs(2));
        }
        for path in self.storages.iter().rev() {
            let _ = storage::unmount(path);
        }
        if let Some((storages, id)) = &self.sandbox {
            let _ = lock(storages).release(id);
        }
    }
}

impl Containers {
    pub fn new(reaper: Arc<Reaper>, log: Logger) -> Containers {
        Containers {
            slots: Mutex::new(HashMap::new()),
            sandbox_storages: Mutex::new(SandboxStorages::default()),
            reaper,
            log,
        }
    }

    fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        validate_id(id)?;
        match lock(&self.slots).get(id) {
            Some(Slot::Ready(c)) => Ok(c.clone()),
            Some(Slot::Creating { .. }) => Err(ContainerError::State {
                id: id.into(),
                why: "is still being created".into(),
            }),
            None => Err(ContainerError::NotFound { id: id.into() }),
        }
    }

    fn reserve(&self, id: &str, claims: &[PathBuf]) -> Result<Reservation<'_>, ContainerError> {
        let mut slots = lock(&self.slots);
        if slots.contains_key(id) {
            return Err(ContainerError::Exists { id: id.into() });
        }
        for (other, slot) in slots.iter() {
            let theirs = match slot {
                Slot::Creating { claims } => claims,
                Slot::Ready(c) => &c.claims,
            };
            for mine in claims {
                if theirs.iter().any(|t| storage::overlaps(mine, t)) {
                    return Err(ContainerError::PathInUse {
                        id: id.into(),
                        path: mine.display().to_string(),
                        other: other.clone(),
                    });
                }
            }
        }
        slots.insert(
            id.to_string(),
            Slot::Creating {
                claims: claims.to_vec(),
            },
        );
        Ok(Reservation {
            containers: self,
            id: id.to_string(),
            done: false,
        })
    }

    /// CreateContainer: storages, cgroup, namespaces, rootfs, and an init waiting for
    /// StartContainer.
    pub fn create(
        &self,
        req: &CreateContainerRequest,
        deadline: Instant,
    ) -> Result<(), ContainerError> {
        let id = req.container_id.as_str();
        validate_id(id)?;
        let plan_err = |source| ContainerError::Plan {
            id: id.into(),
            source,
        };
        let storage_err = |source| ContainerError::Storage {
            id: id.into(),
            source,
        };
        // Everything is checked before anything is done.
        let mut spec = plan::parse_spec(&req.oci_spec_json).map_err(plan_err)?;
        let rootfs = storage::check_guest_path("rootfs_guest_path", &req.rootfs_guest_path)
            .map_err(storage_err)?;
        let storages = storage::plan(&req.storages).map_err(storage_err)?;
        let sandbox_storages = storage::plan(&req.sandbox_storages).map_err(storage_err)?;
        if !req.sandbox_container_id.is_empty() {
            let sandbox = self.get(&req.sandbox_container_id)?;
            pod::join_namespaces(&mut spec, sandbox.init.pid, &req.joined_namespaces)
                .map_err(plan_err)?;
        }
        let mut plan = plan::init_plan(id, &spec, &rootfs).map_err(plan_err)?;
        let seccomp = match &plan.seccomp {
            Some(profile) => {
                let filter =
                    seccomp::compile(profile).map_err(|e| plan_err(PlanError::Seccomp(e)))?;
                if !profile.skipped.is_empty() {
                    slog::debug!(self.log, "seccomp: syscalls unknown to libseccomp skipped";
                          "container" => id, "names" => profile.skipped.join(", "));
                }
                info!(self.log, "seccomp filter compiled"; "container" => id,
                      "instructions" => filter.instructions(),
                      "rules" => profile.rules.len());
                Some(Arc::new(filter))
            }
            None => None,
        };

        let mut claims = vec![rootfs.clone()];
        claims.extend(storages.iter().map(|s| s.mount_point.clone()));
        let mut reservation = self.reserve(id, &claims)?;
        let mut undo = Undo {
            storages: Vec::new(),
            sandbox: None,
            cgroup: None,
            armed: true,
        };

        lock(&self.sandbox_storages)
            .acquire(id, &sandbox_storages)
            .map_err(storage_err)?;
        undo.sandbox = Some((&self.sandbox_storages, id.to_string()));
        for s in &storages {
            storage::mount(s).map_err(storage_err)?;
            undo.storages.push(s.mount_point.clone());
        }
        match std::fs::metadata(&rootfs) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(rootfs_err(id, &rootfs, "is not a directory".into())),
            Err(e) => return Err(rootfs_err(id, &rootfs, format!("cannot be used: {e}"))),
        }
        // Now that the rootfs is there, HOME can come from its /etc/passwd.
        if let Some(process) = spec.process() {
            plan.process = plan::process_setup(process, &rootfs).map_err(plan_err)?;
        }
        plan.process.seccomp = seccomp.clone();

        let cgroup_err = |source| ContainerError::Cgroup {
            id: id.into(),
            source,
        };
        let cgroup = Cgroup::create(&plan.cgroup).map_err(cgroup_err)?;
        undo.cgroup = Some(cgroup.clone());
        cgroup.apply(&plan.resources).map_err(cgroup_err)?;
        cgroup
            .restrict_devices(&plan.resources)
            .map_err(cgroup_err)?;
        let procs = cgroup.procs_for_join().map_err(cgroup_err)?;

        let mut join = Vec::new();
        for (typ, path) in &plan.namespaces.join {
            let fd = open_cloexec(path).map_err(|source| ContainerError::Io {
                id: id.into(),
                what: format!(
                    "opening the {} namespace {}",
                    proc_name(*typ),
                    path.display()
                ),
                source,
            })?;
            join.push((*typ, fd));
        }
        let process_err = |source| ContainerError::Process {
            id: id.into(),
            source,
        };
        // A terminal is opened once the rootfs (and its devpts) exists, after the fork.
        let (pipe_ends, child_stdio) = if plan.process.terminal {
            (None, ChildStdio::Terminal { number: None })
        } else {
            let (ends, child) = process::stdio_pipes().map_err(process_err)?;
            (Some(ends), child)
        };
        let own_pid_ns = plan.namespaces.new_pid();
        let setup = InitSetup {
            namespaces: plan.namespaces.clone(),
            join,
            id_maps: plan.id_maps.clone(),
            rootfs: plan.rootfs.clone(),
            hostname: plan.hostname.clone(),
            domainname: plan.domainname.clone(),
            hooks: plan.hooks.clone(),
        };
        let spawned = spawn::spawn(
            Kind::Init(&setup),
            &plan.process,
            ChildFds {
                stdio: child_stdio,
                cgroup_procs: procs,
            },
            &self.reaper,
            deadline,
        )
        .map_err(|source| ContainerError::Spawn {
            id: id.into(),
            what: "building the container".into(),
            source,
        })?;

        let (ends, init_terminal) = match pipe_ends {
            Some(ends) => (ends, None),
            None => {
                let master = self.open_terminal(id, spawned.pid).inspect_err(|_| {
                    // SAFETY: kill has no memory arguments; the init waits for START and
                    // has not been reaped (its exit cell is empty until the reaper runs).
                    unsafe { libc::kill(spawned.pid, libc::SIGKILL) };
                })?;
                (master.0, Some(master.1))
            }
        };
        let init = Arc::new(Process::new(
            format!("the init process of container {id}"),
            spawned.pid,
            spawned.exit.clone(),
            ends,
        ));
        let container = Arc::new(Container {
            id: id.to_string(),
            cgroup,
            storages: storages.iter().map(|s| s.mount_point.clone()).collect(),
            claims,
            init,
            own_pid_ns,
            init_terminal,
            phase: Mutex::new(Phase::Created(spawned)),
            execs: Mutex::new(HashMap::new()),
            pending_execs: Mutex::new(HashSet::new()),
            seccomp,
        });
        if !plan.ignored.is_empty() {
            warn!(self.log, "parts of the spec are not enforced in the guest";
                  "container" => id, "ignored" => plan.ignored.join(", "));
        }
        self.warn_ambient(id, None, &plan.process);
        info!(self.log, "container created"; "container" => id, "pid" => container.init.pid,
              "cgroup" => container.cgroup.path.display().to_string());
        lock(&self.slots).insert(id.to_string(), Slot::Ready(container));
        reservation.done = true;
        undo.armed = false;
        Ok(())
    }

    fn warn_ambient(&self, id: &str, exec_id: Option<&str>, setup: &spawn::ProcessSetup) {
        if let Some(message) = setup.caps.as_ref().and_then(caps::ambient_warning) {
            warn!(self.log, "{}", message; "container" => id, "exec" => exec_id.unwrap_or("init"));
        }
    }

    /// StartContainer: releases the init and waits for its exec.
    pub fn start(&self, id: &str, deadline: Instant) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        let mut phase = lock(&c.phase);
        let mut spawned = match std::mem::replace(&mut *phase, Phase::StartFailed) {
            Phase::Created(spawned) => spawned,
            other => {
                let why = match other {
                    Phase::Started => "has already been started",
                    _ => "failed to start earlier",
                };
                *phase = other;
                return Err(ContainerError::State {
                    id: id.into(),
                    why: why.into(),
                });
            }
        };
        if let Some(status) = c.init.exit_status() {
            return Err(ContainerError::State {
                id: id.into(),
                why: format!("cannot start: its init process has exited ({status})"),
            });
        }
        match spawn::start(&mut spawned, c.init_terminal, deadline) {
            Ok(()) => {
                *phase = Phase::Started;
                info!(self.log, "container started"; "container" => id, "pid" => c.init.pid);
                Ok(())
            }
            Err(source) => Err(ContainerError::Spawn {
                id: id.into(),
                what: "starting the process".into(),
                source,
            }),
        }
    }

    /// ExecProcess: a new process in the running container's namespaces and cgroup.
    pub fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process_json: &[u8],
        deadline: Instant,
    ) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        validate_id(exec_id).map_err(ContainerError::ExecId)?;
        if !matches!(*lock(&c.phase), Phase::Started) {
            return Err(ContainerError::State {
                id: id.into(),
                why: "is not running: start it first".into(),
            });
        }
        if let Some(status) = c.init.exit_status() {
            return Err(ContainerError::State {
                id: id.into(),
                why: format!("is not running: its init process has exited ({status})"),
            });
        }
        {
            let execs = lock(&c.execs);
            let mut pending = lock(&c.pending_execs);
            if execs.contains_key(exec_id) || !pending.insert(exec_id.to_string()) {
                return Err(ContainerError::ExecExists {
                    id: id.into(),
                    exec_id: exec_id.into(),
                });
            }
        }
        let result = self.exec_inner(&c, exec_id, process_json, deadline);
        lock(&c.pending_execs).remove(exec_id);
        let process = result?;
        info!(self.log, "exec started"; "container" => id, "exec" => exec_id, "pid" => process.pid);
        lock(&c.execs).insert(exec_id.to_string(), process);
        Ok(())
    }

    fn exec_inner(
        &self,
        c: &Container,
        exec_id: &str,
        process_json: &[u8],
        deadline: Instant,
    ) -> Result<Arc<Process>, ContainerError> {
        let id = c.id.as_str();
        let plan_err = |source| ContainerError::Plan {
            id: id.into(),
            source,
        };
        let process = plan::parse_process(process_json).map_err(plan_err)?;
        let init_proc = PathBuf::from(format!("/proc/{}", c.init.pid));
        let root_path = init_proc.join("root");
        let mut setup = plan::process_setup(&process, &root_path).map_err(plan_err)?;
        setup.seccomp = c.seccomp.clone();
        self.warn_ambient(id, Some(exec_id), &setup);
        let io_err = |what: String| {
            move |source| ContainerError::Io {
                id: id.into(),
                what,
                source,
            }
        };
        let mut join = Vec::new();
        for typ in JOIN_ORDER {
            let name = proc_name(typ);
            let ours = Path::new("/proc/self/ns").join(name);
            let theirs = init_proc.join("ns").join(name);
            // A type this kernel does not have, or one the container shares with the agent.
            if !ours.exists() || same_file(&ours, &theirs) {
                continue;
            }
            let fd =
                open_cloexec(&theirs).map_err(io_err(format!("opening {}", theirs.display())))?;
            join.push((typ, fd));
        }
        let root = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_DIRECTORY)
            .open(&root_path)
            .map_err(io_err(format!("opening {}", root_path.display())))?;
        let procs = c
            .cgroup
            .procs_for_join()
            .map_err(|source| ContainerError::Cgroup {
                id: id.into(),
                source,
            })?;
        let (ends, child_stdio) = if setup.terminal {
            let (ends, number) = self.open_terminal(id, c.init.pid)?;
            (
                ends,
                ChildStdio::Terminal {
                    number: Some(number),
                },
            )
        } else {
            process::stdio_pipes().map_err(|source| ContainerError::Process {
                id: id.into(),
                source,
            })?
        };
        let exec = ExecSetup {
            join,
            root: OwnedFd::from(root),
        };
        let spawned = spawn::spawn(
            Kind::Exec(&exec),
            &setup,
            ChildFds {
                stdio: child_stdio,
                cgroup_procs: procs,
            },
            &self.reaper,
            deadline,
        )
        .map_err(|source| ContainerError::Spawn {
            id: id.into(),
            what: format!("exec {exec_id}"),
            source,
        })?;
        Ok(Arc::new(Process::new(
            format!("process {exec_id} of container {id}"),
            spawned.pid,
            spawned.exit,
            ends,
        )))
    }

    /// A new terminal in the devpts of the container that process `pid` is in, as the
    /// agent's stdio ends of a process and the slave's number.
    fn open_terminal(&self, id: &str, pid: i32) -> Result<(StdioEnds, u32), ContainerError> {
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let master =
            crate::terminal::open_master(&root).map_err(|source| ContainerError::Process {
                id: id.into(),
                source: ProcessError::Terminal {
                    what: "the container's terminal".into(),
                    source,
                },
            })?;
        let number = master.number;
        let ends = StdioEnds::terminal(master.fd).map_err(|source| ContainerError::Io {
            id: id.into(),
            what: "duplicating the terminal master".into(),
            source,
        })?;
        Ok((ends, number))
    }

    /// ResizeTerminal.
    pub fn resize(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        cols: u32,
    ) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        let process = self.process(&c, exec_id)?;
        // Larger values are a caller's mistake; the kernel's field is 16 bits.
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        process
            .resize(clamp(rows), clamp(cols))
            .map_err(|source| ContainerError::Process {
                id: id.into(),
                source,
            })
    }

    fn process(&self, c: &Container, exec_id: &str) -> Result<Arc<Process>, ContainerError> {
        if exec_id.is_empty() {
            return Ok(c.init.clone());
        }
        lock(&c.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ContainerError::NoProcess {
                id: c.id.clone(),
                exec_id: exec_id.into(),
            })
    }

    /// SignalProcess.
    pub fn signal(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        let sig = i32::try_from(signal)
            .ok()
            .filter(|s| *s <= libc::SIGRTMAX())
            .ok_or(ContainerError::BadSignal {
                id: id.into(),
                signal,
            })?;
        let process_err = |source| ContainerError::Process {
            id: id.into(),
            source,
        };
        if all {
            let pids = c.cgroup.pids().map_err(|source| ContainerError::Cgroup {
                id: id.into(),
                source,
            })?;
            if pids.is_empty() {
                return Err(ContainerError::State {
                    id: id.into(),
                    why: "has no running processes".into(),
                });
            }
            for pid in pids {
                if pid == c.init.pid {
                    // Others may already be gone: that is not an error for "all".
                    let _ = c.signal_init(sig);
                } else {
                    // SAFETY: kill has no memory arguments; ESRCH for a process that just
                    // exited is fine.
                    unsafe { libc::kill(pid, sig) };
                }
            }
            return Ok(());
        }
        let p = self.process(&c, exec_id)?;
        if Arc::ptr_eq(&p, &c.init) {
            c.signal_init(sig).map_err(process_err)
        } else {
            p.signal(sig).map_err(process_err)
        }
    }

    /// PauseContainer and ResumeContainer.
    pub fn set_frozen(&self, id: &str, frozen: bool) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        c.cgroup
            .set_frozen(frozen, FREEZE_PATIENCE)
            .map_err(|source| ContainerError::Cgroup {
                id: id.into(),
                source,
            })
    }

    /// UpdateContainer: new limits, from an OCI linux.resources object.
    pub fn update(&self, id: &str, resources_json: &[u8]) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(resources_json)
            .map_err(|e| ContainerError::State {
            id: id.into(),
            why: format!("got invalid linux.resources: {e}"),
        })?;
        let cgroup_err = |source| ContainerError::Cgroup {
            id: id.into(),
            source,
        };
        let plan = cgroup::resource_plan(&resources).map_err(cgroup_err)?;
        if plan.devices.is_some() {
            warn!(self.log, "device rules are set once, at create: the update leaves them as they are";
                  "container" => id);
        }
        c.cgroup.apply(&plan).map_err(cgroup_err)
    }

    /// StatsContainer: the raw numbers of the container's cgroup.
    pub fn stats(
        &self,
        id: &str,
    ) -> Result<ward_agent_protocol::agent::StatsContainerResponse, ContainerError> {
        let c = self.get(id)?;
        let g = &c.cgroup;
        let mut reply = ward_agent_protocol::agent::StatsContainerResponse::new();
        reply.cpu_stat = cgroup::parse_flat_keyed(&g.read("cpu.stat"));
        reply.memory_current = cgroup::parse_single(&g.read("memory.current")).unwrap_or(0);
        reply.memory_max = cgroup::parse_single(&g.read("memory.max")).unwrap_or(0);
        reply.memory_peak = cgroup::parse_single(&g.read("memory.peak")).unwrap_or(0);
        reply.memory_stat = cgroup::parse_flat_keyed(&g.read("memory.stat"));
        reply.pids_current = cgroup::parse_single(&g.read("pids.current")).unwrap_or(0);
        reply.pids_max = cgroup::parse_single(&g.read("pids.max")).unwrap_or(0);
        Ok(reply)
    }

    /// ListProcesses: the PIDs of the container's cgroup, with their parents and commands.
    pub fn processes(&self, id: &str) -> Result<Vec<(i32, i32, String)>, ContainerError> {
        let c = self.get(id)?;
        let pids = c.cgroup.pids().map_err(|source| ContainerError::Cgroup {
            id: id.into(),
            source,
        })?;
        Ok(pids
            .into_iter()
            .map(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|raw| command_line(&raw))
                    .unwrap_or_default();
                let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| parent_pid(&stat))
                    .unwrap_or(0);
                (pid, ppid, cmd)
            })
            .collect())
    }

    /// WaitProcess: blocks (without holding any registry lock) until the process exits.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<ExitStatus, ContainerError> {
        let c = self.get(id)?;
        let p = self.process(&c, exec_id)?;
        Ok(p.wait())
    }

    /// RemoveContainer: kills what is left, then forgets the container.
    pub fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let c = self.get(id)?;
        let cgroup_err = |source| ContainerError::Cgroup {
            id: id.into(),
            source,
        };
        c.cgroup.signal_all(libc::SIGKILL).map_err(cgroup_err)?;
        let mut processes = vec![c.init.clone()];
        processes.extend(lock(&c.execs).values().cloned());
        for p in &processes {
            if p.exit.get().is_none() {
                let _ = p.signal(libc::SIGKILL);
            }
            if p.exit.wait_timeout(KILL_PATIENCE).is_none() {
                return Err(ContainerError::Stuck {
                    id: id.into(),
                    what: p.what.clone(),
                    secs: KILL_PATIENCE.as_secs(),
                });
            }
        }
        c.cgroup.remove(KILL_PATIENCE).map_err(cgroup_err)?;
        for path in c.storages.iter().rev() {
            storage::unmount(path).map_err(|source| ContainerError::Storage {
                id: id.into(),
                source,
            })?;
        }
        for path in &c.claims {
            storage::remove_empty_dirs(path);
        }
        lock(&self.sandbox_storages)
            .release(id)
            .map_err(|source| ContainerError::Storage {
                id: id.into(),
                source,
            })?;
        lock(&self.slots).remove(id);
        info!(self.log, "container removed"; "container" => id);
        Ok(())
    }
}

impl Container {
    /// Signals the init. The init of a PID namespace ignores every signal it has no
    /// handler for — even from the agent, outside its namespace — except SIGKILL and
    /// SIGSTOP; so `kill -TERM` of a `sleep` running as a container's PID 1 would do
    /// nothing. When the requested signal would terminate a process with the default
    /// disposition and the init neither catches nor ignores it, the agent sends SIGKILL
    /// and reports the process as killed by the requested signal: the outcome the host
    /// asked for (a process without a handler gets no chance to clean up either way).
    fn signal_init(&self, sig: i32) -> Result<(), ProcessError> {
        let init = &self.init;
        if self.own_pid_ns
            && init.exit_status().is_none()
            && process::default_action_terminates(sig)
        {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", init.pid)).unwrap_or_default();
            if !process::signal_handled(&status, sig) {
                init.set_terminated_by(sig);
                return init.signal(libc::SIGKILL);
            }
        }
        init.signal(sig)
    }
}

fn rootfs_err(id: &str, path: &Path, reason: String) -> ContainerError {
    ContainerError::Rootfs {
        id: id.into(),
        path: path.display().to_string(),
        reason,
    }
}

fn open_cloexec(path: &Path) -> io::Result<OwnedFd> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    Ok(OwnedFd::from(file))
}

/// Whether two paths name the same file (namespaces: the same namespace).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl StreamSource for Containers {
    fn take_stream(&self, header: &StreamHeader) -> Result<File, String> {
        let c = self.get(&header.container_id).map_err(|e| e.to_string())?;
        let p = self
            .process(&c, &header.exec_id)
            .map_err(|e| e.to_string())?;
        p.take_stream(header.kind).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod listing_tests {
    #[test]
    fn process_listing_parses_proc_files() {
        assert_eq!(super::command_line(b"sleep\x001000\x00"), "sleep 1000");
        assert_eq!(super::command_line(b""), "");
        assert_eq!(super::parent_pid("7 (a b) c) S 1 7 7"), Some(1));
        assert_eq!(super::parent_pid("garbage"), None);
    }
}
