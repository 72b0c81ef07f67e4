//! The ttrpc service on vsock port [`AGENT_VSOCK_PORT`]: each RPC is logged, checked, handed
//! to the container registry, and its error turned into a status with the right code.
//!
//! Threads: ttrpc's sync server runs handlers on a per-connection pool and starts more
//! workers whenever fewer than `min` are idle, up to `max`; a WaitProcess blocked for the
//! life of a container therefore never starves the other calls, and the runtime opens a
//! fresh connection per command anyway.

use std::sync::Arc;
use std::time::{Duration, Instant};

use slog::{error, info, Logger};
use ttrpc::TtrpcContext;
use ward_agent_protocol::agent::{
    CheckRequest, CheckResponse, CreateContainerRequest, DiskInfo, DiskRequest, Empty,
    ExecProcessRequest, GuestDetails, GuestDetailsRequest, ListProcessesRequest,
    ListProcessesResponse, OnlineCpusRequest, OnlineCpusResponse, PauseContainerRequest,
    ProcessInfo, RemoveContainerRequest, RemoveNetworkRequest, ResizeTerminalRequest,
    ResumeContainerRequest, SetupNetworkRequest, SignalProcessRequest, StartContainerRequest,
    StatsContainerRequest, StatsContainerResponse, UpdateContainerRequest, WaitProcessRequest,
    WaitProcessResponse,
};
use ward_agent_protocol::agent_ttrpc::{create_agent, Agent};
use ward_agent_protocol::{AGENT_VERSION, AGENT_VSOCK_PORT, PROTOCOL_VERSION};

use crate::container::Containers;
use crate::error::{code_name, to_status, Coded};
use crate::{hotplug, network, sysinfo};

/// The sysfs the hotplug calls work on.
const SYS: &str = "/sys";

/// Deadline of a blocking step when the host sets none.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);
/// Kept back from the host's deadline so that our error reaches it before its timeout.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

const THREADS_MIN: usize = 2;
const THREADS_DEFAULT: usize = 4;
const THREADS_MAX: usize = 64;

pub struct Service {
    containers: Arc<Containers>,
    log: Logger,
}

impl Service {
    pub fn new(containers: Arc<Containers>, log: Logger) -> Service {
        Service { containers, log }
    }

    /// Logs the outcome of one call and converts its error.
    fn finish<T, E: Coded>(
        &self,
        rpc: &'static str,
        container: &str,
        started: Instant,
        result: Result<T, E>,
    ) -> ttrpc::Result<T> {
        let ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(value) => {
                info!(self.log, "rpc done"; "rpc" => rpc, "container" => container, "ms" => ms);
                Ok(value)
            }
            Err(e) => {
                error!(self.log, "rpc failed"; "rpc" => rpc, "container" => container, "ms" => ms,
                       "code" => code_name(e.code()), "error" => e.to_string());
                Err(to_status(&e))
            }
        }
    }
}

/// When a blocking step must give up: the host's deadline minus a margin, or the default.
fn deadline(ctx: &TtrpcContext) -> Instant {
    let now = Instant::now();
    match u64::try_from(ctx.timeout_nano) {
        Ok(nanos) if nanos > 0 => {
            let budget = Duration::from_nanos(nanos).saturating_sub(DEADLINE_MARGIN);
            now + budget.max(Duration::from_secs(1))
        }
        _ => now + DEFAULT_DEADLINE,
    }
}

impl Agent for Service {
    fn check(&self, _ctx: &TtrpcContext, _req: CheckRequest) -> ttrpc::Result<CheckResponse> {
        slog::debug!(self.log, "rpc"; "rpc" => "Check");
        let mut reply = CheckResponse::new();
        reply.agent_version = AGENT_VERSION.to_string();
        reply.protocol_version = PROTOCOL_VERSION;
        Ok(reply)
    }

    fn get_guest_details(
        &self,
        _ctx: &TtrpcContext,
        _req: GuestDetailsRequest,
    ) -> ttrpc::Result<GuestDetails> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "GetGuestDetails");
        self.finish("GetGuestDetails", "", started, sysinfo::guest_details())
    }

    fn create_container(
        &self,
        ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "CreateContainer", "container" => &req.container_id,
              "rootfs" => &req.rootfs_guest_path, "storages" => req.storages.len(),
              "spec_bytes" => req.oci_spec_json.len());
        let result = self.containers.create(&req, deadline(ctx));
        self.finish("CreateContainer", &req.container_id, started, result)
            .map(|()| Empty::new())
    }

    fn start_container(
        &self,
        ctx: &TtrpcContext,
        req: StartContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "StartContainer", "container" => &req.container_id);
        let result = self.containers.start(&req.container_id, deadline(ctx));
        self.finish("StartContainer", &req.container_id, started, result)
            .map(|()| Empty::new())
    }

    fn exec_process(&self, ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "ExecProcess", "container" => &req.container_id,
              "exec" => &req.exec_id);
        let result = self.containers.exec(
            &req.container_id,
            &req.exec_id,
            &req.oci_process_json,
            deadline(ctx),
        );
        self.finish("ExecProcess", &req.container_id, started, result)
            .map(|()| Empty::new())
    }

    fn signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "SignalProcess", "container" => &req.container_id,
              "exec" => &req.exec_id, "signal" => req.signal, "all" => req.all);
        let result = self
            .containers
            .signal(&req.container_id, &req.exec_id, req.signal, req.all);
        self.finish("SignalProcess", &req.container_id, started, result)
            .map(|()| Empty::new())
    }

    fn resize_terminal(
        &self,
        _ctx: &TtrpcContext,
        req: ResizeTerminalRequest,
    ) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        slog::debug!(self.log, "rpc"; "rpc" => "ResizeTerminal", "container" => &req.container_id,
              "exec" => &req.exec_id, "rows" => req.rows, "cols" => req.cols);
        let result = self
            .containers
            .resize(&req.container_id, &req.exec_id, req.rows, req.cols);
        self.finish("ResizeTerminal", &req.container_id, started, result)
            .map(|()| Empty::new())
    }

    fn wait_process(
        &self,
        _ctx: &TtrpcContext,
        req: WaitProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "WaitProcess", "container" => &req.container_id,
              "exec" => &req.exec_id);
        let result = self.containers.wait(&req.container_id, &req.exec_id);
        if let Ok(status) = &result {
            info!(self.log, "process exited"; "container" => &req.container_id,
                  "exec" => &req.exec_id, "status" => status.to_string());
        }
        self.finish("WaitProcess", &req.container_id, started, result)
            .map(|status| {
                let mut reply = WaitProcessResponse::new();
                reply.status = status.shell_status();
                reply.signal = status.signal();
                reply
            })
    }

    fn pause_container(
        &self,
        _ctx: &TtrpcContext,
        req: PauseContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "PauseContainer", "container" => &req.container_id);
        let result = self.containers.set_frozen(&req.container_id, true);
        self.finish("PauseContainer", &req.container_id, started, result)
            .map(|()| Empty::new())
    }

    fn resume_container(
        &self,
        _ctx: &TtrpcContext,
        req: ResumeContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "ResumeContainer", "container" => &req.container_id);
        let result = self.containers.set_frozen(&req.container_id, false);
        self.finish("ResumeContainer", &req.container_id, started, result)
            .map(|()| Empty::new())
    }

    fn update_container(
        &self,
        _ctx: &TtrpcContext,
        req: UpdateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "UpdateContainer", "container" => &req.container_id);
        let result = self
            .containers
            .update(&req.container_id, &req.linux_resources_json);
        self.finish("UpdateContainer", &req.container_id, started, result)
            .map(|()| Empty::new())
    }

    fn stats_container(
        &self,
        _ctx: &TtrpcContext,
        req: StatsContainerRequest,
    ) -> ttrpc::Result<StatsContainerResponse> {
        let started = Instant::now();
        let result = self.containers.stats(&req.container_id);
        self.finish("StatsContainer", &req.container_id, started, result)
    }

    fn list_processes(
        &self,
        _ctx: &TtrpcContext,
        req: ListProcessesRequest,
    ) -> ttrpc::Result<ListProcessesResponse> {
        let started = Instant::now();
        let result = self.containers.processes(&req.container_id);
        self.finish("ListProcesses", &req.container_id, started, result)
            .map(|processes| {
                let mut reply = ListProcessesResponse::new();
                reply.processes = processes
                    .into_iter()
                    .map(|(pid, ppid, cmd)| {
                        let mut info = ProcessInfo::new();
                        info.pid = pid;
                        info.ppid = ppid;
                        info.cmd = cmd;
                        info
                    })
                    .collect();
                reply
            })
    }

    fn remove_container(
        &self,
        _ctx: &TtrpcContext,
        req: RemoveContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "RemoveContainer", "container" => &req.container_id);
        let result = self.containers.remove(&req.container_id);
        self.finish("RemoveContainer", &req.container_id, started, result)
            .map(|()| Empty::new())
    }

    fn online_cpus(
        &self,
        ctx: &TtrpcContext,
        req: OnlineCpusRequest,
    ) -> ttrpc::Result<OnlineCpusResponse> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "OnlineCpus", "count" => req.count);
        let result =
            hotplug::online_cpus(SYS.as_ref(), req.count, req.offline_surplus, deadline(ctx));
        self.finish("OnlineCpus", "", started, result)
            .map(|online| {
                let mut reply = OnlineCpusResponse::new();
                reply.online = online;
                reply
            })
    }

    fn wait_disk(&self, ctx: &TtrpcContext, req: DiskRequest) -> ttrpc::Result<DiskInfo> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "WaitDisk", "serial" => &req.serial);
        let result = hotplug::wait_disk(SYS.as_ref(), &req.serial, deadline(ctx));
        self.finish("WaitDisk", "", started, result).map(|disk| {
            let mut reply = DiskInfo::new();
            reply.path = disk.dev_path();
            reply.major = disk.major;
            reply.minor = disk.minor;
            reply.size_bytes = disk.size_bytes;
            reply
        })
    }

    fn release_disk(&self, ctx: &TtrpcContext, req: DiskRequest) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "ReleaseDisk", "serial" => &req.serial);
        let result = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|source| hotplug::HotplugError::Read {
                path: "/proc/self/mountinfo".into(),
                source,
            })
            .and_then(|mountinfo| {
                hotplug::release_disk(SYS.as_ref(), &mountinfo, &req.serial, deadline(ctx))
            });
        self.finish("ReleaseDisk", "", started, result)
            .map(|()| Empty::new())
    }

    fn setup_network(&self, ctx: &TtrpcContext, req: SetupNetworkRequest) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "SetupNetwork", "interfaces" => req.interfaces.len(),
              "routes" => req.routes.len(), "namespace" => &req.namespace);
        let budget = deadline(ctx).saturating_duration_since(Instant::now());
        let result = network::plan::parse(&req).and_then(|plan| {
            network::apply::apply(&plan, budget)?;
            Ok(plan)
        });
        if let Ok(plan) = &result {
            for nic in &plan.nics {
                let addresses: Vec<String> = nic
                    .addresses
                    .iter()
                    .map(|(ip, p)| format!("{ip}/{p}"))
                    .collect();
                info!(self.log, "network interface up"; "name" => &nic.name, "mtu" => nic.mtu,
                      "addresses" => addresses.join(","));
            }
        }
        self.finish("SetupNetwork", "", started, result.map(drop))
            .map(|()| Empty::new())
    }

    fn remove_network(
        &self,
        ctx: &TtrpcContext,
        req: RemoveNetworkRequest,
    ) -> ttrpc::Result<Empty> {
        let started = Instant::now();
        info!(self.log, "rpc"; "rpc" => "RemoveNetwork", "namespace" => &req.namespace);
        let until = deadline(ctx);
        let left = || until.saturating_duration_since(Instant::now());
        let result = network::plan::parse_namespace(&req.namespace)
            .and_then(|name| {
                name.ok_or_else(|| {
                    network::NetworkError::Invalid(
                        "RemoveNetwork needs a namespace name; the guest's own stays".into(),
                    )
                })
            })
            .and_then(|name| {
                // Its NICs come back here first, to be released for the VMM's unplug.
                let macs = network::apply::evacuate(&name, left())?;
                network::namespace::remove(&name)?;
                Ok(macs)
            })
            .and_then(|macs| {
                for mac in &macs {
                    hotplug::release_nic(SYS.as_ref(), mac, until).map_err(|source| {
                        network::NetworkError::Release {
                            mac: mac.clone(),
                            source,
                        }
                    })?;
                }
                info!(self.log, "network namespace removed"; "namespace" => &req.namespace,
                      "nics_released" => macs.join(","));
                Ok(())
            });
        self.finish("RemoveNetwork", "", started, result)
            .map(|()| Empty::new())
    }
}

/// Binds the agent port and starts serving; the returned server must be kept alive.
pub fn serve(service: Service) -> ttrpc::Result<ttrpc::Server> {
    let address = format!("vsock://-1:{AGENT_VSOCK_PORT}");
    let mut server = ttrpc::Server::new()
        .bind(&address)?
        .register_service(create_agent(Arc::new(service)))
        .set_thread_count_min(THREADS_MIN)
        .set_thread_count_default(THREADS_DEFAULT)
        .set_thread_count_max(THREADS_MAX);
    server.start()?;
    Ok(server)
}
