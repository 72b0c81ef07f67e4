//! The task service containerd drives over ttrpc. Each call maps onto the lifecycle
//! library; what is the shim's own is the per-process bookkeeping containerd expects (exit
//! statuses kept until Delete, Wait, the event order) and the stdio copies.
//!
//! The shim is the host process standing for every container it serves (the runc CLI's
//! relay): its PID is recorded as the container's relay, so the library's status reads
//! "stopped" once the shim is gone, and it is the PID containerd is given for each task.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, Status as TaskStatus,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};
use slog::{info, warn, Logger};
use thiserror::Error;
use ward_hypervisor::{ProcessRecord, VmInstance};

use super::events::{Event, Events};
use super::rootfs::{self, RootfsError};
use super::stdio::{self, Attached, Paths, StdioError};
use crate::container::lifecycle::{self, Console, Prepared};
use crate::container::{Context, LifecycleError, Status, StoreError};
use crate::relay::Streams;
use crate::sandbox::{Agent, AgentError, Sandbox, SandboxError};

/// After a process exits, how long its output may still drain into the FIFOs.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// The exit status reported when the guest cannot tell it (the VM or agent is gone):
/// what a SIGKILL'ed process reports.
const LOST_STATUS: i32 = 128 + libc::SIGKILL;
/// Rootfs layers containerd may stack (it sends one mount in practice).
const MAX_ROOTFS_LAYERS: usize = 8;

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("the shim could not set up: {0}")]
    Setup(String),
    #[error("container \"{0}\" is not served by this shim")]
    NoContainer(String),
    #[error("container \"{0}\" already exists in this shim")]
    ContainerExists(String),
    #[error("container \"{id}\": no process \"{exec_id}\"")]
    NoProcess { id: String, exec_id: String },
    #[error("container \"{id}\": process \"{exec_id}\" already exists")]
    ExecExists { id: String, exec_id: String },
    #[error("container \"{id}\": process \"{exec_id}\" already finished")]
    Finished { id: String, exec_id: String },
    #[error("container \"{id}\": process \"{exec_id}\" is {state}")]
    WrongState {
        id: String,
        exec_id: String,
        state: &'static str,
    },
    #[error("container \"{id}\": {what}")]
    Invalid { id: String, what: String },
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Stdio(#[from] StdioError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("container \"{id}\": {source}")]
    Sandbox {
        id: String,
        #[source]
        source: SandboxError,
    },
    #[error("container \"{id}\": {source}")]
    Agent {
        id: String,
        #[source]
        source: AgentError,
    },
    #[error("container \"{id}\": encoding the statistics: {message}")]
    Encode { id: String, message: String },
}

impl ServiceError {
    /// The gRPC code containerd turns back into its errdefs (NotFound above all: a kill
    /// of a finished process is not an error to it).
    fn code(&self) -> ttrpc::Code {
        use ttrpc::Code;
        match self {
            ServiceError::NoContainer(_)
            | ServiceError::NoProcess { .. }
            | ServiceError::Finished { .. }
            | ServiceError::Lifecycle(LifecycleError::Store(StoreError::NotFound(_))) => {
                Code::NOT_FOUND
            }
            ServiceError::ContainerExists(_)
            | ServiceError::ExecExists { .. }
            | ServiceError::Lifecycle(LifecycleError::Store(StoreError::Exists(_))) => {
                Code::ALREADY_EXISTS
            }
            ServiceError::WrongState { .. }
            | ServiceError::Lifecycle(LifecycleError::WrongState { .. })
            | ServiceError::Lifecycle(LifecycleError::NotStopped { .. }) => {
                Code::FAILED_PRECONDITION
            }
            ServiceError::Invalid { .. } => Code::INVALID_ARGUMENT,
            _ => Code::UNKNOWN,
        }
    }
}

fn rpc_error(e: ServiceError) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked handler leaves consistent data behind: every update is one assignment.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    Stopped,
}

struct ProcState {
    phase: Phase,
    /// The agent's name of the process: "" for init, the library's exec ID otherwise.
    guest_exec: String,
    exit: Option<(u32, Timestamp)>,
    io: Option<Attached>,
    /// Deleted before it ever ran: its watcher has nothing left to report.
    deleted: bool,
}

/// One process containerd knows: a container's init (exec ID "") or an exec.
struct Process {
    exec_id: String,
    terminal: bool,
    paths: Paths,
    /// An exec's OCI process (JSON), kept from Exec until Start.
    spec: Vec<u8>,
    state: Mutex<ProcState>,
    exited: Condvar,
    /// Held by Start until its event is queued, and by the exit watcher while it queues
    /// the exit: containerd ignores an exit that comes before the start.
    order: Mutex<()>,
}

impl Process {
    fn new(exec_id: &str, terminal: bool, paths: Paths, spec: Vec<u8>) -> Process {
        Process {
            exec_id: exec_id.to_string(),
            terminal,
            paths,
            spec,
            state: Mutex::new(ProcState {
                phase: Phase::Created,
                guest_exec: String::new(),
                exit: None,
                io: None,
                deleted: false,
            }),
            exited: Condvar::new(),
            order: Mutex::new(()),
        }
    }
}

struct Container {
    id: String,
    bundle: PathBuf,
    vm: VmInstance,
    /// How many rootfs mounts we made at `<bundle>/rootfs`.
    rootfs_layers: usize,
    paused: AtomicBool,
    init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
}

struct Inner {
    ctx: Result<Context, String>,
    log: Logger,
    events: Events,
    exit: Arc<ExitSignal>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    pid: u32,
}

/// The ttrpc task service of one shim (one pod).
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl Service {
    pub fn new(
        ctx: Result<Context, String>,
        log: Logger,
        events: Events,
        exit: Arc<ExitSignal>,
    ) -> Service {
        Service {
            inner: Arc::new(Inner {
                ctx,
                log,
                events,
                exit,
                containers: Mutex::new(HashMap::new()),
                pid: std::process::id(),
            }),
        }
    }
}

impl Inner {
    fn ctx(&self) -> Result<&Context, ServiceError> {
        self.ctx
            .as_ref()
            .map_err(|e| ServiceError::Setup(e.clone()))
    }

    fn container(&self, id: &str) -> Result<Arc<Container>, ServiceError> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| ServiceError::NoContainer(id.to_string()))
    }

    fn process(&self, c: &Container, exec_id: &str) -> Result<Arc<Process>, ServiceError> {
        if exec_id.is_empty() {
            return Ok(c.init.clone());
        }
        lock(&c.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ServiceError::NoProcess {
                id: c.id.clone(),
                exec_id: exec_id.to_string(),
            })
    }

    /// A fresh agent connection to the container's VM.
    fn agent(&self, c: &Container) -> Result<Agent, ServiceError> {
        let ctx = self.ctx()?;
        let sandbox_err = |source| ServiceError::Sandbox {
            id: c.id.clone(),
            source,
        };
        Sandbox::attach(&ctx.config, c.vm.clone())
            .and_then(|sandbox| sandbox.agent())
            .map_err(sandbox_err)
    }

    fn create(
        self: &Arc<Self>,
        req: &CreateTaskRequest,
    ) -> Result<CreateTaskResponse, ServiceError> {
        let ctx = self.ctx()?;
        let id = req.id.as_str();
        if lock(&self.containers).contains_key(id) {
            return Err(ServiceError::ContainerExists(id.to_string()));
        }
        let bundle = PathBuf::from(&req.bundle);
        let rootfs_dir = bundle.join("rootfs");
        let mounts: Vec<rootfs::Mount> = req
            .rootfs
            .iter()
            .map(|m| rootfs::Mount {
                fstype: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        if mounts.len() > MAX_ROOTFS_LAYERS {
            return Err(ServiceError::Invalid {
                id: id.to_string(),
                what: format!(
                    "{} rootfs mounts, at most {MAX_ROOTFS_LAYERS}",
                    mounts.len()
                ),
            });
        }
        rootfs::mount_all(id, &mounts, &rootfs_dir)?;
        let unmount = || {
            if let Err(e) = rootfs::unmount_all(id, &rootfs_dir, mounts.len()) {
                warn!(self.log, "unmounting the rootfs"; "container" => id, "error" => e.to_string());
            }
        };
        // Not detached: the shim stays attached to the process's stdio for its whole life.
        let console = Console {
            detach: false,
            socket: None,
        };
        let prepared = match lifecycle::prepare(ctx, &bundle, id, console) {
            Ok(prepared) => prepared,
            Err(e) => {
                unmount();
                return Err(e.into());
            }
        };
        let Prepared {
            lock: state_lock,
            mut state,
            sandbox,
            agent,
            terminal,
            ..
        } = prepared;
        drop(agent);
        let paths = Paths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let finish = (|| -> Result<Attached, ServiceError> {
            // Before the process starts, so that no byte of its output is lost.
            let streams = Streams::open(&sandbox, id, "", terminal).map_err(|source| {
                ServiceError::Sandbox {
                    id: id.to_string(),
                    source,
                }
            })?;
            state.relay = ProcessRecord::of("containerd-shim-ward-v2", self.pid as i32);
            lifecycle::run_create_hooks(&state)?;
            state.status = Status::Created;
            ctx.store
                .save(&state_lock, &state)
                .map_err(LifecycleError::from)?;
            Ok(stdio::attach(id, streams, &paths, &self.log)?)
        })();
        let io = match finish {
            Ok(io) => io,
            Err(e) => {
                drop(sandbox);
                lifecycle::teardown(ctx, &state);
                if let Err(cleanup) = ctx.store.remove(state_lock, id) {
                    warn!(self.log, "removing the state of a failed create"; "container" => id,
                          "error" => cleanup.to_string());
                }
                unmount();
                return Err(e);
            }
        };
        drop(state_lock);
        let vm = sandbox.vm.clone();
        let init = Arc::new(Process::new("", terminal, paths.clone(), Vec::new()));
        lock(&init.state).io = Some(io);
        let container = Arc::new(Container {
            id: id.to_string(),
            bundle: bundle.clone(),
            vm,
            rootfs_layers: mounts.len(),
            paused: AtomicBool::new(false),
            init: init.clone(),
            execs: Mutex::new(HashMap::new()),
        });
        lock(&self.containers).insert(id.to_string(), container.clone());
        self.events.send(Event::Create(TaskCreate {
            container_id: id.to_string(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: paths.stdin,
                stdout: paths.stdout,
                stderr: paths.stderr,
                terminal,
                ..Default::default()
            }),
            checkpoint: req.checkpoint.clone(),
            pid: self.pid,
            ..Default::default()
        }));
        // The init process exists in the guest from now on: a kill before start ends it.
        self.watch(container, init, String::new());
        info!(self.log, "task created"; "container" => id);
        Ok(CreateTaskResponse {
            pid: self.pid,
            ..Default::default()
        })
    }

    /// Waits in a thread of its own for the guest process to exit, then reports it: the
    /// output drained and its FIFOs closed first, then the state, then the event.
    fn watch(self: &Arc<Self>, c: Arc<Container>, p: Arc<Process>, guest_exec: String) {
        let inner = self.clone();
        std::thread::spawn(move || {
            // A connection of its own: WaitProcess has no deadline and may take days.
            let status = inner
                .agent(&c)
                .and_then(|agent| {
                    agent
                        .wait_process(&c.id, &guest_exec)
                        .map_err(|source| ServiceError::Agent {
                            id: c.id.clone(),
                            source,
                        })
                })
                .unwrap_or_else(|e| {
                    warn!(inner.log, "waiting for a process"; "container" => &c.id,
                          "exec" => &p.exec_id, "error" => e.to_string());
                    LOST_STATUS
                });
            let io = lock(&p.state).io.take();
            if let Some(io) = io {
                io.drain(DRAIN_GRACE, &inner.log);
            }
            let _order = lock(&p.order);
            let exited_at = now();
            {
                let mut state = lock(&p.state);
                if state.deleted {
                    return;
                }
                state.phase = Phase::Stopped;
                state.exit = Some((status as u32, exited_at.clone()));
            }
            if p.exec_id.is_empty() {
                if let Ok(ctx) = inner.ctx() {
                    if let Err(e) = lifecycle::record_exit(ctx, &c.id, status) {
                        warn!(inner.log, "recording the exit"; "container" => &c.id, "error" => e.to_string());
                    }
                }
            }
            p.exited.notify_all();
            info!(inner.log, "process exited"; "container" => &c.id, "exec" => &p.exec_id,
                  "status" => status);
            let id = if p.exec_id.is_empty() {
                c.id.clone()
            } else {
                p.exec_id.clone()
            };
            inner.events.send(Event::Exit(TaskExit {
                container_id: c.id.clone(),
                id,
                pid: inner.pid,
                exit_status: status as u32,
                exited_at: MessageField::some(exited_at),
                ..Default::default()
            }));
        });
    }

    fn start(self: &Arc<Self>, req: &StartRequest) -> Result<StartResponse, ServiceError> {
        let ctx = self.ctx()?;
        let c = self.container(&req.id)?;
        let p = self.process(&c, &req.exec_id)?;
        let _order = lock(&p.order);
        let phase = lock(&p.state).phase;
        if phase != Phase::Created {
            return Err(ServiceError::WrongState {
                id: c.id.clone(),
                exec_id: req.exec_id.clone(),
                state: if phase == Phase::Running {
                    "running"
                } else {
                    "stopped"
                },
            });
        }
        if req.exec_id.is_empty() {
            lifecycle::start(ctx, &c.id)?;
            lock(&p.state).phase = Phase::Running;
            self.events.send(Event::Start(TaskStart {
                container_id: c.id.clone(),
                pid: self.pid,
                ..Default::default()
            }));
            info!(self.log, "task started"; "container" => &c.id);
        } else {
            let (guest_exec, sandbox, agent) = lifecycle::exec(ctx, &c.id, p.spec.clone())?;
            let attached = Streams::open(&sandbox, &c.id, &guest_exec, p.terminal)
                .map_err(|source| ServiceError::Sandbox {
                    id: c.id.clone(),
                    source,
                })
                .and_then(|streams| Ok(stdio::attach(&c.id, streams, &p.paths, &self.log)?));
            let io = match attached {
                Ok(io) => io,
                Err(e) => {
                    // A process no one can see or wait for must not run on.
                    let _ = agent.signal_process(&c.id, &guest_exec, libc::SIGKILL, false);
                    return Err(e);
                }
            };
            {
                let mut state = lock(&p.state);
                state.phase = Phase::Running;
                state.guest_exec = guest_exec.clone();
                state.io = Some(io);
            }
            self.events.send(Event::ExecStarted(TaskExecStarted {
                container_id: c.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: self.pid,
                ..Default::default()
            }));
            info!(self.log, "exec started"; "container" => &c.id, "exec" => &req.exec_id,
                  "guest_exec" => &guest_exec);
            self.watch(c.clone(), p.clone(), guest_exec);
        }
        Ok(StartResponse {
            pid: self.pid,
            ..Default::default()
        })
    }

    fn delete(&self, req: &DeleteRequest) -> Result<DeleteResponse, ServiceError> {
        let ctx = self.ctx()?;
        let c = self.container(&req.id)?;
        if !req.exec_id.is_empty() {
            let p = self.process(&c, &req.exec_id)?;
            let (phase, exit) = {
                let state = lock(&p.state);
                (state.phase, state.exit.clone())
            };
            if phase == Phase::Running {
                return Err(ServiceError::WrongState {
                    id: c.id.clone(),
                    exec_id: req.exec_id.clone(),
                    state: "running",
                });
            }
            lock(&c.execs).remove(&req.exec_id);
            let (status, at) = exit.unwrap_or_else(|| (0, now()));
            return Ok(DeleteResponse {
                pid: self.pid,
                exit_status: status,
                exited_at: MessageField::some(at),
                ..Default::default()
            });
        }
        // The library decides whether the container may go (stopped, or never started).
        match lifecycle::delete(ctx, &c.id, false) {
            Ok(()) | Err(LifecycleError::Store(StoreError::NotFound(_))) => {}
            Err(e) => return Err(e.into()),
        }
        let (status, at, io) = {
            let mut state = lock(&c.init.state);
            if state.exit.is_none() {
                // Deleted before it ran: its watcher sees the VM go and must stay quiet.
                state.deleted = true;
                state.phase = Phase::Stopped;
                state.exit = Some((0, now()));
            }
            let (status, at) = state.exit.clone().unwrap_or_else(|| (0, now()));
            (status, at, state.io.take())
        };
        c.init.exited.notify_all();
        if let Some(io) = io {
            io.drain(Duration::from_secs(1), &self.log);
        }
        if let Err(e) = rootfs::unmount_all(&c.id, &c.bundle.join("rootfs"), c.rootfs_layers) {
            warn!(self.log, "unmounting the rootfs"; "container" => &c.id, "error" => e.to_string());
        }
        lock(&self.containers).remove(&c.id);
        self.events.send(Event::Delete(TaskDelete {
            container_id: c.id.clone(),
            pid: self.pid,
            exit_status: status,
            exited_at: MessageField::some(at.clone()),
            id: c.id.clone(),
            ..Default::default()
        }));
        info!(self.log, "task deleted"; "container" => &c.id);
        Ok(DeleteResponse {
            pid: self.pid,
            exit_status: status,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    fn exec(&self, req: &ExecProcessRequest) -> Result<(), ServiceError> {
        let c = self.container(&req.id)?;
        let spec = req
            .spec
            .as_ref()
            .map(|any| any.value.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ServiceError::Invalid {
                id: c.id.clone(),
                what: format!("exec \"{}\" has no process spec", req.exec_id),
            })?;
        let paths = Paths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        {
            let mut execs = lock(&c.execs);
            if req.exec_id.is_empty() || execs.contains_key(&req.exec_id) {
                return Err(ServiceError::ExecExists {
                    id: c.id.clone(),
                    exec_id: req.exec_id.clone(),
                });
            }
            let process = Process::new(&req.exec_id, req.terminal, paths, spec);
            execs.insert(req.exec_id.clone(), Arc::new(process));
        }
        self.events.send(Event::ExecAdded(TaskExecAdded {
            container_id: c.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        }));
        Ok(())
    }

    fn kill(&self, req: &KillRequest) -> Result<(), ServiceError> {
        let ctx = self.ctx()?;
        let c = self.container(&req.id)?;
        let p = self.process(&c, &req.exec_id)?;
        let (phase, guest_exec) = {
            let state = lock(&p.state);
            (state.phase, state.guest_exec.clone())
        };
        let finished = || ServiceError::Finished {
            id: c.id.clone(),
            exec_id: req.exec_id.clone(),
        };
        let signal = req.signal as i32;
        if req.exec_id.is_empty() {
            // As runc's shim: signalling a finished init is NotFound, which containerd
            // takes as done (`ctr task delete --force` kills before it deletes).
            if phase == Phase::Stopped {
                return Err(finished());
            }
            lifecycle::kill(ctx, &c.id, signal, req.all)?;
        } else {
            if phase != Phase::Running {
                return Err(finished());
            }
            self.agent(&c)?
                .signal_process(&c.id, &guest_exec, signal, false)
                .map_err(|source| ServiceError::Agent {
                    id: c.id.clone(),
                    source,
                })?;
        }
        info!(self.log, "signal sent"; "container" => &c.id, "exec" => &req.exec_id,
              "signal" => signal, "all" => req.all);
        Ok(())
    }

    fn resize_pty(&self, req: &ResizePtyRequest) -> Result<(), ServiceError> {
        let c = self.container(&req.id)?;
        let p = self.process(&c, &req.exec_id)?;
        let (phase, guest_exec) = {
            let state = lock(&p.state);
            (state.phase, state.guest_exec.clone())
        };
        // An exec not started yet has nothing in the guest to resize.
        if !p.terminal
            || phase == Phase::Stopped
            || (phase == Phase::Created && !p.exec_id.is_empty())
        {
            return Ok(());
        }
        let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
        self.agent(&c)?
            .resize_terminal(&c.id, &guest_exec, clamp(req.height), clamp(req.width))
            .map_err(|source| ServiceError::Agent {
                id: c.id.clone(),
                source,
            })
    }

    fn close_io(&self, req: &CloseIORequest) -> Result<(), ServiceError> {
        let c = self.container(&req.id)?;
        let p = self.process(&c, &req.exec_id)?;
        if req.stdin {
            if let Some(io) = &lock(&p.state).io {
                io.close_stdin();
            }
        }
        Ok(())
    }

    fn set_paused(&self, id: &str, paused: bool) -> Result<(), ServiceError> {
        let ctx = self.ctx()?;
        let c = self.container(id)?;
        lifecycle::set_paused(ctx, id, paused)?;
        c.paused.store(paused, Ordering::SeqCst);
        let container_id = id.to_string();
        self.events.send(if paused {
            Event::Paused(TaskPaused {
                container_id,
                ..Default::default()
            })
        } else {
            Event::Resumed(TaskResumed {
                container_id,
                ..Default::default()
            })
        });
        Ok(())
    }

    fn state(&self, req: &StateRequest) -> Result<StateResponse, ServiceError> {
        let c = self.container(&req.id)?;
        let p = self.process(&c, &req.exec_id)?;
        let state = lock(&p.state);
        let status = match state.phase {
            Phase::Created => TaskStatus::CREATED,
            Phase::Running if c.paused.load(Ordering::SeqCst) => TaskStatus::PAUSED,
            Phase::Running => TaskStatus::RUNNING,
            Phase::Stopped => TaskStatus::STOPPED,
        };
        let (exit_status, exited_at) = match &state.exit {
            Some((status, at)) => (*status, MessageField::some(at.clone())),
            None => (0, MessageField::none()),
        };
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: self.pid,
            status: status.into(),
            stdin: p.paths.stdin.clone(),
            stdout: p.paths.stdout.clone(),
            stderr: p.paths.stderr.clone(),
            terminal: p.terminal,
            exit_status,
            exited_at,
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    fn pids(&self, req: &PidsRequest) -> Result<PidsResponse, ServiceError> {
        let ctx = self.ctx()?;
        let c = self.container(&req.id)?;
        let processes = lifecycle::processes(ctx, &c.id)?
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.pid.max(0) as u32,
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn stats(&self, req: &StatsRequest) -> Result<StatsResponse, ServiceError> {
        let ctx = self.ctx()?;
        let c = self.container(&req.id)?;
        let guest = lifecycle::stats(ctx, &c.id)?;
        let metrics = super::metrics::from_guest(&guest);
        let any = containerd_shim::util::convert_to_any(Box::new(metrics)).map_err(|e| {
            ServiceError::Encode {
                id: c.id.clone(),
                message: e.to_string(),
            }
        })?;
        Ok(StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    fn update(&self, req: &UpdateTaskRequest) -> Result<(), ServiceError> {
        let ctx = self.ctx()?;
        let c = self.container(&req.id)?;
        let resources = req
            .resources
            .as_ref()
            .map(|any| any.value.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ServiceError::Invalid {
                id: c.id.clone(),
                what: "update without resources".into(),
            })?;
        lifecycle::update(ctx, &c.id, resources)?;
        Ok(())
    }

    fn wait(&self, req: &WaitRequest) -> Result<WaitResponse, ServiceError> {
        let c = self.container(&req.id)?;
        let p = self.process(&c, &req.exec_id)?;
        let mut state = lock(&p.state);
        let (status, at) = loop {
            if let Some(exit) = &state.exit {
                break exit.clone();
            }
            state = p.exited.wait(state).unwrap_or_else(|e| e.into_inner());
        };
        Ok(WaitResponse {
            exit_status: status,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }
}

/// Logs a failed request and turns it into a ttrpc status.
fn reply<T>(log: &Logger, call: &'static str, result: Result<T, ServiceError>) -> TtrpcResult<T> {
    result.map_err(|e| {
        warn!(log, "request failed"; "call" => call, "error" => e.to_string());
        rpc_error(e)
    })
}

impl Task for Service {
    fn create(&self, _: &TtrpcContext, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
        reply(&self.inner.log, "Create", self.inner.create(&req))
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        reply(&self.inner.log, "Start", self.inner.start(&req))
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        reply(&self.inner.log, "Delete", self.inner.delete(&req))
    }

    fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        reply(&self.inner.log, "Exec", self.inner.exec(&req)).map(|()| Empty::new())
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        reply(&self.inner.log, "Kill", self.inner.kill(&req)).map(|()| Empty::new())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        reply(&self.inner.log, "ResizePty", self.inner.resize_pty(&req)).map(|()| Empty::new())
    }

    fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        reply(&self.inner.log, "CloseIO", self.inner.close_io(&req)).map(|()| Empty::new())
    }

    fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        reply(
            &self.inner.log,
            "Pause",
            self.inner.set_paused(&req.id, true),
        )
        .map(|()| Empty::new())
    }

    fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        reply(
            &self.inner.log,
            "Resume",
            self.inner.set_paused(&req.id, false),
        )
        .map(|()| Empty::new())
    }

    fn state(&self, _: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        reply(&self.inner.log, "State", self.inner.state(&req))
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        reply(&self.inner.log, "Pids", self.inner.pids(&req))
    }

    fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        reply(&self.inner.log, "Stats", self.inner.stats(&req))
    }

    fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        reply(&self.inner.log, "Update", self.inner.update(&req)).map(|()| Empty::new())
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        reply(&self.inner.log, "Wait", self.inner.wait(&req))
    }

    fn connect(&self, _: &TtrpcContext, _: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: self.inner.pid,
            task_pid: self.inner.pid,
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, _: ShutdownRequest) -> TtrpcResult<Empty> {
        // containerd asks after each delete; the shim of a pod stays while any of its
        // containers does.
        if lock(&self.inner.containers).is_empty() {
            info!(self.inner.log, "last container gone: shutting down");
            self.inner.exit.signal();
        }
        Ok(Empty::new())
    }
}
