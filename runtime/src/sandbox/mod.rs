//! One microVM and the way into it: launching it through the `Hypervisor` trait, waiting
//! for its agent, opening stdio streams, and tearing it down. Everything here works from a
//! persisted `VmInstance`, so each short-lived `ward` command can pick the VM up again.

pub mod agent;
pub mod host_cgroup;
pub mod member_network;
pub mod mount_points;
pub mod pod;
pub mod shares;
pub mod sizing;
pub mod store;

use std::io::Write;
use std::time::{Duration, Instant};

use slog::{debug, info, warn, Logger};
use thiserror::Error;
use ward_agent_protocol::agent::DiskInfo;
use ward_agent_protocol::stream::{self, StreamHeader, StreamKind};
use ward_agent_protocol::{AGENT_VSOCK_PORT, STREAM_VSOCK_PORT};
use ward_hypervisor::{
    Accel, DiskSpec, Hypervisor, SharedDir, VmConfig, VmInstance, VsockConnection,
};

pub use agent::{Agent, AgentError};

use crate::config::Config;

/// What the agent writes on the console once it listens (agent/src/main.rs).
const AGENT_READY_LINE: &str = "agent ready";
/// How long connections may keep failing after the agent said it listens: on a working
/// VM the first one succeeds within milliseconds of that line.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(15);

/// How many console lines an error about a dead VM shows.
const CONSOLE_TAIL_LINES: usize = 20;

/// How long a stdio stream's handshake (header out, the agent's reply back) may take. The
/// agent answers at once: the process exists or it does not.
pub const STREAM_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Said once per sandbox started under TCG.
const TCG_WARNING: &str = "the VM runs under TCG, not KVM: QEMU does not treat TCG as a \
     security boundary, so a guest that escapes its container may reach the host; set \
     [hypervisor] require_kvm = true to refuse such VMs";

#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("no hardware-speed KVM here, and [hypervisor] require_kvm = true forbids TCG (the {backend} backend would use it): run on a host where `ward check` says KVM is hardware or nested")]
    KvmRequired { backend: String },
    #[error(transparent)]
    Hypervisor(#[from] ward_hypervisor::Error),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("the VM exited while booting; {report}")]
    DiedDuringBoot { report: String },
    #[error("the VM is not running; {report}")]
    Dead { report: String },
    #[error("the agent did not answer within {secs} s of VM start (last error: {last}); last lines of the console ({log}):\n{tail}")]
    BootTimeout {
        secs: u64,
        last: String,
        log: String,
        tail: String,
    },
    #[error("the agent is listening (its console says so) but vsock connections to it have failed for {secs} s (last error: {last}); last lines of the console ({log}):\n{tail}")]
    Unreachable {
        secs: u64,
        last: String,
        log: String,
        tail: String,
    },
    #[error("stream {what}: {message}")]
    Stream { what: String, message: String },
}

/// What a new sandbox's VM is made of, besides the configuration.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    /// Its size at boot.
    pub size: sizing::Size,
    /// The host directories it exports.
    pub shared_dirs: Vec<SharedDir>,
    /// Room to grow; None: it keeps its boot size.
    pub hotplug: Option<ward_hypervisor::HotplugRoom>,
    /// The sandbox's host cgroup (its directories), which every process of the VM joins.
    pub host_cgroups: Vec<std::path::PathBuf>,
    /// The pod's network cards (taps in its namespace); none for `--network none`.
    pub nics: Vec<ward_hypervisor::Nic>,
}

/// A launched (or re-attached) microVM.
pub struct Sandbox {
    hypervisor: Box<dyn Hypervisor>,
    pub vm: VmInstance,
}

impl Sandbox {
    /// Refuses a sandbox that would run under TCG where `require_kvm` says so, and warns
    /// once (not per launch attempt) that it does otherwise.
    pub fn admit(config: &Config, id: &str, log: &Logger) -> Result<(), SandboxError> {
        let hypervisor = ward_hypervisor::backend(&config.hypervisor)?;
        if hypervisor.accel()? == Accel::Tcg {
            if config.hypervisor.require_kvm {
                return Err(SandboxError::KvmRequired {
                    backend: hypervisor.kind().to_string(),
                });
            }
            warn!(log, "{TCG_WARNING}"; "container" => id, "backend" => hypervisor.kind().as_str());
        }
        Ok(())
    }

    /// Boots a VM as `plan` says and returns once the VM process runs; `admit` first.
    pub fn launch(
        config: &Config,
        id: &str,
        run_dir: &std::path::Path,
        plan: &LaunchPlan,
        log: &Logger,
    ) -> Result<Sandbox, SandboxError> {
        let hypervisor = ward_hypervisor::backend(&config.hypervisor)?;
        let vm_config = VmConfig {
            id: id.to_string(),
            run_dir: run_dir.to_path_buf(),
            kernel: config.guest.kernel.clone(),
            initrd: config.guest.initrd.clone(),
            extra_kernel_params: config.guest.kernel_params.clone(),
            vcpus: plan.size.vcpus,
            memory_mib: plan.size.memory_mib,
            shared_dirs: plan.shared_dirs.clone(),
            hotplug: plan.hotplug,
            host_cgroups: plan.host_cgroups.clone(),
            nics: plan.nics.clone(),
        };
        let vm = hypervisor.launch(&vm_config)?;
        info!(log, "VM launched"; "sandbox" => id, "vm" => &vm.description,
              "vcpus" => plan.size.vcpus, "memory_mib" => plan.size.memory_mib,
              "pids" => format!("{:?}", vm.processes.iter().map(|p| p.pid).collect::<Vec<_>>()));
        Ok(Sandbox { hypervisor, vm })
    }

    /// Picks up a VM that an earlier command launched.
    pub fn attach(config: &Config, vm: VmInstance) -> Result<Sandbox, SandboxError> {
        // The backend that launched it, whatever a new VM would get now.
        let hypervisor = ward_hypervisor::backend_of(vm.backend, &config.hypervisor)?;
        Ok(Sandbox { hypervisor, vm })
    }

    pub fn is_running(&self) -> bool {
        self.hypervisor.is_running(&self.vm)
    }

    /// What to look at if the VM fails while a command talks to it.
    fn post_mortem(&self) -> ward_hypervisor::PostMortem {
        ward_hypervisor::PostMortem::of(self.hypervisor.as_ref(), &self.vm)
    }

    /// Which of the VM's processes exited and the ends of their logs and of the console,
    /// for a VM found not running.
    fn gone_report(&self) -> String {
        self.post_mortem().report().unwrap_or_else(|| {
            let (log, tail) = self.console_tail();
            format!("its console log {log} ends with:\n{tail}")
        })
    }

    fn console_tail(&self) -> (String, String) {
        (
            self.vm.console_log.display().to_string(),
            ward_hypervisor::console_tail(&self.vm.console_log, CONSOLE_TAIL_LINES),
        )
    }

    /// Waits until the agent answers Check, watching the VM so that a guest that dies
    /// ends the wait at once with its console output.
    pub fn wait_for_agent(&self, timeout: Duration, log: &Logger) -> Result<Agent, SandboxError> {
        let start = Instant::now();
        let mut last;
        let mut pause = Duration::from_millis(5);
        let mut agent_listening: Option<Instant> = None;
        loop {
            if !self.is_running() {
                let report = self.gone_report();
                return Err(SandboxError::DiedDuringBoot { report });
            }
            let attempt = self
                .hypervisor
                .connect(&self.vm, AGENT_VSOCK_PORT)
                .map_err(SandboxError::from)
                .and_then(|conn| {
                    Ok(Agent::over(
                        conn,
                        Duration::from_secs(10),
                        self.post_mortem(),
                    )?)
                });
            match attempt {
                Ok(agent) => {
                    debug!(log, "agent ready"; "after_ms" => start.elapsed().as_millis() as u64);
                    return Ok(agent);
                }
                Err(SandboxError::Agent(e @ AgentError::Version { .. })) => return Err(e.into()),
                Err(e) => last = e.to_string(),
            }
            if agent_listening.is_none() && self.console_says(AGENT_READY_LINE) {
                agent_listening = Some(Instant::now());
            }
            if agent_listening.is_some_and(|since| since.elapsed() >= UNREACHABLE_AFTER) {
                let (log, tail) = self.console_tail();
                return Err(SandboxError::Unreachable {
                    secs: UNREACHABLE_AFTER.as_secs(),
                    last,
                    log,
                    tail,
                });
            }
            if start.elapsed() >= timeout {
                let (log, tail) = self.console_tail();
                return Err(SandboxError::BootTimeout {
                    secs: timeout.as_secs(),
                    last,
                    log,
                    tail,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Whether the guest console has shown `text`.
    fn console_says(&self, text: &str) -> bool {
        std::fs::read(&self.vm.console_log)
            .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(text))
    }

    /// Connects to the agent of a VM that is already up.
    pub fn agent(&self) -> Result<Agent, SandboxError> {
        if !self.is_running() {
            let report = self.gone_report();
            return Err(SandboxError::Dead { report });
        }
        let conn = self.hypervisor.connect(&self.vm, AGENT_VSOCK_PORT)?;
        Ok(Agent::over(
            conn,
            Duration::from_secs(30),
            self.post_mortem(),
        )?)
    }

    /// Opens one stdio stream of a guest process, the handshake within
    /// [`STREAM_HANDSHAKE_TIMEOUT`].
    pub fn open_stream(
        &self,
        container_id: &str,
        exec_id: &str,
        kind: StreamKind,
    ) -> Result<VsockConnection, SandboxError> {
        let header = StreamHeader {
            kind,
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
        };
        let what = header.to_string();
        let fail = |message: String| SandboxError::Stream {
            what: what.clone(),
            message,
        };
        let mut conn = self.hypervisor.connect(&self.vm, STREAM_VSOCK_PORT)?;
        // Bounded: a guest that never answers must not hold the caller (and the container
        // lock it may hold) forever (issue 14).
        conn.set_timeouts(Some(STREAM_HANDSHAKE_TIMEOUT))
            .and_then(|()| conn.write_all(header.encode().as_bytes()))
            .map_err(|e| fail(format!("sending the header: {e}")))?;
        let reply = conn
            .read_line_within(stream::MAX_REPLY_LEN, STREAM_HANDSHAKE_TIMEOUT)
            .map_err(|e| fail(format!("reading the agent's reply: {e}")))?;
        stream::parse_reply(&reply).map_err(|e| fail(e.to_string()))?;
        Ok(conn)
    }

    /// Brings the VM to `count` vCPUs, all online: the VMM adds (or asks the guest to
    /// eject) CPUs, then the agent onlines the new ones and waits for the count. Returns
    /// the guest's online CPU list.
    pub fn set_vcpus(&self, agent: &Agent, count: u32) -> Result<String, SandboxError> {
        self.hypervisor.set_vcpus(&self.vm, count)?;
        let preallocated = self.vm.hotplug.is_some_and(|room| room.cpus_preallocated);
        Ok(agent.online_cpus(count, preallocated)?)
    }

    /// Brings the VM's memory to `mib` (the guest onlines hot-added memory by itself);
    /// returns what it has afterwards.
    pub fn set_memory(&self, mib: u32) -> Result<u32, SandboxError> {
        Ok(self.hypervisor.set_memory(&self.vm, mib)?)
    }

    /// Whether the VM was launched with room to grow.
    pub fn can_grow(&self) -> bool {
        self.vm.hotplug.is_some() || self.vm.backend == ward_hypervisor::BackendKind::Builtin
    }

    /// Hot-adds `disk` and returns once the guest has its block device.
    pub fn add_disk(&self, agent: &Agent, disk: &DiskSpec) -> Result<DiskInfo, SandboxError> {
        self.hypervisor.add_disk(&self.vm, disk)?;
        Ok(agent.wait_disk(&disk.id)?)
    }

    /// Hot-removes the disk attached as `id`: the guest lets go of it first (its block
    /// device disappears), then the VMM takes it away.
    pub fn remove_disk(&self, agent: &Agent, id: &str) -> Result<(), SandboxError> {
        agent.release_disk(id)?;
        Ok(self.hypervisor.remove_disk(&self.vm, id)?)
    }

    /// Hot-adds network card `nic` as `id`.
    pub fn add_nic(&self, id: &str, nic: &ward_hypervisor::Nic) -> Result<(), SandboxError> {
        Ok(self.hypervisor.add_nic(&self.vm, id, nic)?)
    }

    /// Hot-removes the network card attached as `id`.
    pub fn remove_nic(&self, id: &str) -> Result<(), SandboxError> {
        Ok(self.hypervisor.remove_nic(&self.vm, id)?)
    }

    /// Stops the VM and everything it is made of.
    pub fn shutdown(&self, grace: Duration) -> Result<(), SandboxError> {
        Ok(self.hypervisor.shutdown(&self.vm, grace)?)
    }
}
