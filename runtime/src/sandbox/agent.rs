//! The runtime's side of the agent protocol: a ttrpc client over a vsock connection, with
//! the version check made at every connect and a deadline on every call but WaitProcess.

use std::os::fd::IntoRawFd;
use std::time::Duration;

use thiserror::Error;
use ward_agent_protocol::agent::{
    CheckRequest, CreateContainerRequest, DiskInfo, DiskRequest, ExecProcessRequest,
    ListProcessesRequest, OnlineCpusRequest, PauseContainerRequest, ProcessInfo,
    RemoveContainerRequest, ResizeTerminalRequest, ResumeContainerRequest, SignalProcessRequest,
    StartContainerRequest, StatsContainerRequest, StatsContainerResponse, Storage,
    UpdateContainerRequest, WaitProcessRequest,
};
use ward_agent_protocol::agent_ttrpc::AgentClient;
use ward_agent_protocol::{AGENT_VERSION, PROTOCOL_VERSION};
use ward_hypervisor::{PostMortem, VsockConnection};

/// Control calls are small; the deadline only has to cover a slow guest (emulated ring 0
/// makes every guest syscall cost milliseconds).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Hotplug waits for the guest kernel's ACPI handling, which a busy guest may delay.
const HOTPLUG_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum AgentError {
    #[error("agent: cannot set up the ttrpc client: {0}")]
    Client(String),
    #[error("agent speaks protocol {agent} (agent {agent_version}), this runtime speaks {ours} (runtime {AGENT_VERSION}): rebuild the initramfs with `make assets`")]
    Version {
        agent: u32,
        agent_version: String,
        ours: u32,
    },
    #[error("agent: {call}: {message}")]
    Call { call: &'static str, message: String },
}

/// A connected, version-checked agent.
pub struct Agent {
    client: AgentClient,
    /// Consulted when a call fails without the agent's answer: a dropped connection is
    /// usually a VM that died, and the reason is in its logs.
    vm: PostMortem,
}

fn ctx(timeout: Option<Duration>) -> ttrpc::context::Context {
    match timeout {
        Some(t) => ttrpc::context::with_timeout(t.as_nanos() as i64),
        None => ttrpc::context::Context::default(),
    }
}

/// ttrpc reports a remote status as "RpcStatus(...)": keep only the agent's message. Any
/// other error lost the agent's answer; if the VM died meanwhile, say how.
fn describe(error: ttrpc::Error, vm: &PostMortem) -> String {
    match error {
        ttrpc::Error::RpcStatus(status) => status.message().to_string(),
        other => match vm.report() {
            Some(report) => format!("{other}; {report}"),
            None => other.to_string(),
        },
    }
}

/// What CreateContainer needs to build one container.
pub struct NewContainer<'a> {
    pub id: &'a str,
    /// The guest's OCI spec, as JSON.
    pub spec_json: Vec<u8>,
    /// The sandbox's shared directory, mounted once for all of its containers.
    pub sandbox_storages: Vec<Storage>,
    /// The container's own (a rootfs on a block device), unmounted with it.
    pub storages: Vec<Storage>,
    pub rootfs_guest_path: &'a str,
    /// For a pod's member: its sandbox container, whose namespaces it joins.
    pub sandbox_container: Option<&'a str>,
    /// Which ones ("network", "ipc", "uts", "pid").
    pub joined_namespaces: &'a [String],
}

impl Agent {
    /// Wraps an open connection to the agent's port and checks the protocol version.
    pub fn over(
        connection: VsockConnection,
        timeout: Duration,
        vm: PostMortem,
    ) -> Result<Agent, AgentError> {
        let fd = connection.into_fd().into_raw_fd();
        let client = ttrpc::Client::new(fd).map_err(|e| AgentError::Client(e.to_string()))?;
        let agent = Agent {
            client: AgentClient::new(client),
            vm,
        };
        let reply = agent
            .client
            .check(ctx(Some(timeout)), &CheckRequest::new())
            .map_err(agent.failed("Check"))?;
        if reply.protocol_version != PROTOCOL_VERSION {
            return Err(AgentError::Version {
                agent: reply.protocol_version,
                agent_version: reply.agent_version,
                ours: PROTOCOL_VERSION,
            });
        }
        Ok(agent)
    }

    /// Gives the guest a carried network: the pod's, in the guest's own namespace
    /// (`namespace` empty), or a member's own, in a namespace the agent makes for it by
    /// that name (its NICs being hot-added meanwhile).
    pub fn setup_network(
        &self,
        interfaces: &[crate::network::Interface],
        routes: &[crate::network::Route],
        namespace: &str,
    ) -> Result<(), AgentError> {
        use ward_agent_protocol::agent::{IpNet, NetInterface, NetRoute, SetupNetworkRequest};
        let net = |n: &crate::network::IpNet| {
            let mut out = IpNet::new();
            out.address = n.ip.to_string();
            out.prefix = u32::from(n.prefix);
            out
        };
        let mut req = SetupNetworkRequest::new();
        for interface in interfaces {
            let mut nic = NetInterface::new();
            nic.name = interface.name.clone();
            nic.mac = ward_hypervisor::format_mac(&interface.mac);
            nic.mtu = interface.mtu;
            nic.addresses = interface.addresses.iter().map(net).collect();
            req.interfaces.push(nic);
        }
        for route in routes {
            let mut r = NetRoute::new();
            r.destination = route.destination.as_ref().map(net).into();
            r.gateway = route.gateway.map(|g| g.to_string()).unwrap_or_default();
            r.device = route.device.clone();
            r.source = route.source.map(|s| s.to_string()).unwrap_or_default();
            req.routes.push(r);
        }
        req.namespace = namespace.to_string();
        self.client
            .setup_network(ctx(Some(CALL_TIMEOUT)), &req)
            .map(drop)
            .map_err(self.failed("SetupNetwork"))
    }

    /// Deletes a member's own network namespace in the guest (its NICs return to the
    /// guest's own, to be unplugged).
    pub fn remove_network(&self, namespace: &str) -> Result<(), AgentError> {
        let mut req = ward_agent_protocol::agent::RemoveNetworkRequest::new();
        req.namespace = namespace.to_string();
        self.client
            .remove_network(ctx(Some(CALL_TIMEOUT)), &req)
            .map(drop)
            .map_err(self.failed("RemoveNetwork"))
    }

    /// Names the call in the error of a failed RPC.
    fn failed(&self, call: &'static str) -> impl Fn(ttrpc::Error) -> AgentError + '_ {
        move |e| AgentError::Call {
            call,
            message: describe(e, &self.vm),
        }
    }

    pub fn create_container(&self, new: NewContainer<'_>) -> Result<(), AgentError> {
        let mut req = CreateContainerRequest::new();
        req.container_id = new.id.to_string();
        req.oci_spec_json = new.spec_json;
        req.sandbox_storages = new.sandbox_storages;
        req.storages = new.storages;
        req.rootfs_guest_path = new.rootfs_guest_path.to_string();
        if let Some(sandbox) = new.sandbox_container {
            req.sandbox_container_id = sandbox.to_string();
            req.joined_namespaces = new.joined_namespaces.to_vec();
        }
        self.client
            .create_container(ctx(Some(CALL_TIMEOUT)), &req)
            .map(drop)
            .map_err(self.failed("CreateContainer"))
    }

    /// Ends every process of a container and removes it from the guest; the VM goes on
    /// for the pod's other containers.
    pub fn remove_container(&self, id: &str) -> Result<(), AgentError> {
        let mut req = RemoveContainerRequest::new();
        req.container_id = id.to_string();
        self.client
            .remove_container(ctx(Some(CALL_TIMEOUT)), &req)
            .map(drop)
            .map_err(self.failed("RemoveContainer"))
    }

    pub fn start_container(&self, id: &str) -> Result<(), AgentError> {
        let mut req = StartContainerRequest::new();
        req.container_id = id.to_string();
        self.client
            .start_container(ctx(Some(CALL_TIMEOUT)), &req)
            .map(drop)
            .map_err(self.failed("StartContainer"))
    }

    pub fn exec_process(
        &self,
        id: &str,
        exec_id: &str,
        process_json: Vec<u8>,
    ) -> Result<(), AgentError> {
        let mut req = ExecProcessRequest::new();
        req.container_id = id.to_string();
        req.exec_id = exec_id.to_string();
        req.oci_process_json = process_json;
        self.client
            .exec_process(ctx(Some(CALL_TIMEOUT)), &req)
            .map(drop)
            .map_err(self.failed("ExecProcess"))
    }

    /// Freezes (`true`) or thaws every process of the container.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<(), AgentError> {
        let result = if paused {
            let mut req = PauseContainerRequest::new();
            req.container_id = id.to_string();
            self.client
                .pause_container(ctx(Some(CALL_TIMEOUT)), &req)
                .map_err(self.failed("PauseContainer"))
        } else {
            let mut req = ResumeContainerRequest::new();
            req.container_id = id.to_string();
            self.client
                .resume_container(ctx(Some(CALL_TIMEOUT)), &req)
                .map_err(self.failed("ResumeContainer"))
        };
        result.map(drop)
    }

    pub fn update(&self, id: &str, resources_json: Vec<u8>) -> Result<(), AgentError> {
        let mut req = UpdateContainerRequest::new();
        req.container_id = id.to_string();
        req.linux_resources_json = resources_json;
        self.client
            .update_container(ctx(Some(CALL_TIMEOUT)), &req)
            .map(drop)
            .map_err(self.failed("UpdateContainer"))
    }

    /// Onlines hot-added vCPUs until `count` are online; returns the guest's online list.
    /// With `offline_surplus`, also offlines the CPUs beyond `count` (see the protocol).
    pub fn online_cpus(&self, count: u32, offline_surplus: bool) -> Result<String, AgentError> {
        let mut req = OnlineCpusRequest::new();
        req.count = count;
        req.offline_surplus = offline_surplus;
        self.client
            .online_cpus(ctx(Some(HOTPLUG_TIMEOUT)), &req)
            .map(|reply| reply.online)
            .map_err(self.failed("OnlineCpus"))
    }

    /// Waits for the hot-added disk with `serial` to appear in the guest.
    pub fn wait_disk(&self, serial: &str) -> Result<DiskInfo, AgentError> {
        let mut req = DiskRequest::new();
        req.serial = serial.to_string();
        self.client
            .wait_disk(ctx(Some(HOTPLUG_TIMEOUT)), &req)
            .map_err(self.failed("WaitDisk"))
    }

    /// Has the guest let go of the disk with `serial` so that the VMM can remove it.
    pub fn release_disk(&self, serial: &str) -> Result<(), AgentError> {
        let mut req = DiskRequest::new();
        req.serial = serial.to_string();
        self.client
            .release_disk(ctx(Some(HOTPLUG_TIMEOUT)), &req)
            .map(drop)
            .map_err(self.failed("ReleaseDisk"))
    }

    pub fn stats(&self, id: &str) -> Result<StatsContainerResponse, AgentError> {
        let mut req = StatsContainerRequest::new();
        req.container_id = id.to_string();
        self.client
            .stats_container(ctx(Some(CALL_TIMEOUT)), &req)
            .map_err(self.failed("StatsContainer"))
    }

    pub fn list_processes(&self, id: &str) -> Result<Vec<ProcessInfo>, AgentError> {
        let mut req = ListProcessesRequest::new();
        req.container_id = id.to_string();
        self.client
            .list_processes(ctx(Some(CALL_TIMEOUT)), &req)
            .map(|reply| reply.processes)
            .map_err(self.failed("ListProcesses"))
    }

    pub fn signal_process(
        &self,
        id: &str,
        exec_id: &str,
        signal: i32,
        all: bool,
    ) -> Result<(), AgentError> {
        let mut req = SignalProcessRequest::new();
        req.container_id = id.to_string();
        req.exec_id = exec_id.to_string();
        req.signal = signal as u32;
        req.all = all;
        self.client
            .signal_process(ctx(Some(CALL_TIMEOUT)), &req)
            .map(drop)
            .map_err(self.failed("SignalProcess"))
    }

    /// Sets the window size of a process's terminal in the guest.
    pub fn resize_terminal(
        &self,
        id: &str,
        exec_id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), AgentError> {
        let mut req = ResizeTerminalRequest::new();
        req.container_id = id.to_string();
        req.exec_id = exec_id.to_string();
        req.rows = rows.into();
        req.cols = cols.into();
        self.client
            .resize_terminal(ctx(Some(CALL_TIMEOUT)), &req)
            .map(drop)
            .map_err(self.failed("ResizeTerminal"))
    }

    /// Blocks until the process exits; returns its shell-style status.
    pub fn wait_process(&self, id: &str, exec_id: &str) -> Result<i32, AgentError> {
        let mut req = WaitProcessRequest::new();
        req.container_id = id.to_string();
        req.exec_id = exec_id.to_string();
        self.client
            .wait_process(ctx(None), &req)
            .map(|reply| reply.status)
            .map_err(self.failed("WaitProcess"))
    }
}
