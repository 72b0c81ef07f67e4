//! The lifecycle operations behind the commands: create, start, kill, delete, and the
//! pieces `run` and the relay share with them. Each changes state only under the
//! container's lock and writes the result back before it returns.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use slog::{info, warn, Logger};
use thiserror::Error;
use ward_agent_protocol::agent::Storage;
use ward_hypervisor::{DiskSpec, ProcessRecord, SharedDir, SharedFs};

use super::bundle::{Bundle, BundleError};
use super::guest_spec::HostBind;
use super::state::{ContainerState, Status};
use super::store::{ContainerLock, Store, StoreError};
use super::{devices, guest_spec, namespace_paths};
use crate::config::Config;
use crate::container::block_rootfs;
use crate::hooks::{self, Stage};
use crate::network;
use crate::sandbox::agent::NewContainer;
use crate::sandbox::host_cgroup::{self, HostCgroup, HostCgroupError, Limits};
use crate::sandbox::member_network;
use crate::sandbox::pod::{self, Placement};
use crate::sandbox::sizing;
use crate::sandbox::store::{self, SandboxState, SandboxStore, SandboxStoreError};
use crate::sandbox::{mount_points, shares, Agent, AgentError, LaunchPlan, Sandbox, SandboxError};

/// The tag of the sandbox's exported directory (9p tags are at most 31 bytes): every
/// container's rootfs and volumes, each under `<container ID>/`.
const SANDBOX_TAG: &str = "ward-sandbox";
/// Where the guest mounts it.
const GUEST_SANDBOX_DIR: &str = "/run/ward/sandbox";
/// Where a container's rootfs on a block device is mounted in the guest, by container ID.
const GUEST_BLOCK_ROOTFS_DIR: &str = "/run/ward/rootfs";
/// VMs launched for one container before giving up on a guest whose vsock never answers.
const BOOT_ATTEMPTS: u32 = 2;
/// How long a VM gets to quit on its own when it is being torn down.
const VM_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
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
    #[error("cannot {action} container \"{id}\": it is {status}")]
    WrongState {
        action: &'static str,
        id: String,
        status: Status,
    },
    #[error("cannot delete container \"{id}\" that is not stopped: {status} (use --force)")]
    NotStopped { id: String, status: Status },
    #[error("container \"{id}\": {what}: {source}")]
    Io {
        id: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container \"{id}\": the relay process failed: {message}")]
    Relay { id: String, message: String },
    #[error("container \"{id}\": {message}")]
    Console { id: String, message: &'static str },
    #[error("container \"{id}\": {source}")]
    Terminal {
        id: String,
        #[source]
        source: crate::relay::terminal::TerminalError,
    },
    #[error("container \"{id}\": {source}")]
    GuestSpec {
        id: String,
        #[source]
        source: super::guest_spec::GuestSpecError,
    },
    #[error("container \"{id}\": {source}")]
    Hook {
        id: String,
        #[source]
        source: crate::hooks::HookError,
    },
    #[error("container \"{id}\": {source}")]
    NamespacePath {
        id: String,
        #[source]
        source: super::namespace_paths::NamespacePathError,
    },
    #[error("container \"{id}\": {source}")]
    Pod {
        id: String,
        #[source]
        source: Box<SandboxStoreError>,
    },
    #[error("container \"{id}\": {source}")]
    Device {
        id: String,
        #[source]
        source: super::devices::DeviceError,
    },
    #[error("container \"{id}\": {source}")]
    Share {
        id: String,
        #[source]
        source: crate::sandbox::shares::ShareError,
    },
    #[error("container \"{id}\": {source}")]
    HostCgroup {
        id: String,
        #[source]
        source: HostCgroupError,
    },
    #[error("container \"{id}\": {source}")]
    MountPoint {
        id: String,
        #[source]
        source: crate::sandbox::mount_points::MountPointError,
    },
    #[error("container \"{id}\": {source}")]
    BlockRootfs {
        id: String,
        source: crate::container::block_rootfs::BlockRootfsError,
    },
    #[error("container \"{id}\": carrying its own network namespace into its pod's VM: {source}")]
    MemberNetwork {
        id: String,
        source: Box<crate::sandbox::member_network::MemberNetworkError>,
    },
    #[error("container \"{id}\": host networking cannot be carried into a VM (the spec names no network namespace, so the container would share the host's stack); give it a network namespace of its own (podman/docker: not --network host)")]
    HostNetwork { id: String },
    #[error("container \"{id}\": {source}")]
    Network {
        id: String,
        #[source]
        source: crate::network::NetworkError,
    },
}

/// What every command needs: where state lives, the configuration, the logger.
pub struct Context {
    pub store: Store,
    pub config: Config,
    pub log: Logger,
    /// The global flags to give a relay so it logs where we do.
    pub relay_flags: Vec<String>,
}

impl Context {
    /// The sandboxes of this `--root`'s containers.
    pub fn sandboxes(&self) -> SandboxStore {
        SandboxStore::new(self.store.root())
    }
}

pub fn sandbox_err(id: &str) -> impl Fn(SandboxError) -> LifecycleError + '_ {
    move |source| LifecycleError::Sandbox {
        id: id.to_string(),
        source,
    }
}

fn pod_err(id: &str) -> impl Fn(SandboxStoreError) -> LifecycleError + '_ {
    move |source| LifecycleError::Pod {
        id: id.to_string(),
        source: Box::new(source),
    }
}

fn share_err(id: &str) -> impl Fn(shares::ShareError) -> LifecycleError + '_ {
    move |source| LifecycleError::Share {
        id: id.to_string(),
        source,
    }
}

fn cgroup_err(id: &str) -> impl Fn(HostCgroupError) -> LifecycleError + '_ {
    move |source| LifecycleError::HostCgroup {
        id: id.to_string(),
        source,
    }
}

fn agent_err(id: &str) -> impl Fn(AgentError) -> LifecycleError + '_ {
    move |source| LifecycleError::Agent {
        id: id.to_string(),
        source,
    }
}

/// A container whose VM runs and whose init process waits for StartContainer.
pub struct Prepared {
    pub lock: ContainerLock,
    pub state: ContainerState,
    pub sandbox: Sandbox,
    pub agent: Agent,
    /// The init process has a terminal (`process.terminal`).
    pub terminal: bool,
    /// The namespace an engine's prestart hooks attached to its network before the VM
    /// booted (with [`HookTiming::BeforeBoot`]); the relay joins it. The hooks have run.
    pub network_holder: Option<network::holder::NetnsHolder>,
}

/// When a new container's prestart and createRuntime hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookTiming {
    /// After `prepare`, once the caller's relay runs (the caller runs them).
    AfterRelay,
    /// For a container asking for a new network namespace whose hooks attach it to a
    /// network (docker's): inside `prepare`, before the VM boots, with a namespace
    /// holder's PID, so that what they attach is carried into the VM. `ward create` (the
    /// path docker takes, through containerd's runc shim) does this.
    BeforeBoot,
}

/// How a command attaches a process's stdio: whether it returns before the process ends
/// (`create`, `run -d`, `exec -d`) and where a terminal's master goes.
#[derive(Debug, Clone, Copy)]
pub struct Console<'a> {
    pub detach: bool,
    pub socket: Option<&'a Path>,
}

impl Console<'_> {
    /// runc's rules: a detached process's terminal needs somewhere to go, and a console
    /// socket is only for a detached process with a terminal.
    pub fn check(&self, id: &str, terminal: bool) -> Result<(), LifecycleError> {
        let message = match (self.detach, terminal, self.socket.is_some()) {
            (true, true, false) => {
                "cannot allocate tty if ward will detach without setting console socket"
            }
            (false, _, true) | (_, false, true) => {
                "cannot use console socket if ward will not detach or allocate tty"
            }
            _ => return Ok(()),
        };
        Err(LifecycleError::Console {
            id: id.to_string(),
            message,
        })
    }
}

/// Claims the ID, boots the VM, and has the agent create the container. On any failure
/// nothing is left behind: no VM, no helper, no state directory.
pub fn prepare(
    ctx: &Context,
    bundle_path: &Path,
    id: &str,
    console: Console<'_>,
) -> Result<Prepared, LifecycleError> {
    prepare_with(ctx, bundle_path, id, console, HookTiming::AfterRelay)
}

/// [`prepare`], with the hooks run when `hooks` says.
pub fn prepare_with(
    ctx: &Context,
    bundle_path: &Path,
    id: &str,
    console: Console<'_>,
    hooks: HookTiming,
) -> Result<Prepared, LifecycleError> {
    // Validate everything we can before touching the disk or starting anything.
    ward_agent_protocol::ids::validate_id(id).map_err(StoreError::from)?;
    let bundle = Bundle::load(bundle_path)?;
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    console.check(id, terminal)?;
    let namespaces = bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref());
    namespace_paths::check(namespaces.unwrap_or(&[])).map_err(|source| {
        LifecycleError::NamespacePath {
            id: id.to_string(),
            source,
        }
    })?;
    let lock = ctx.store.claim(id)?;
    let mut state = ContainerState {
        id: id.to_string(),
        bundle: bundle.path.clone(),
        rootfs: bundle.rootfs.clone(),
        created: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        status: Status::Creating,
        annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        sandbox: None,
        vm: None,
        relay: None,
        exec_relays: Vec::new(),
        exit_status: None,
        creator: ProcessRecord::of("ward", std::process::id() as i32),
        hooks: bundle.spec.hooks().clone(),
    };
    let result = ctx
        .store
        .save(&lock, &state)
        .map_err(LifecycleError::from)
        .and_then(|()| boot(ctx, &bundle, &mut state, &lock, hooks));
    match result {
        Ok((sandbox, agent, network_holder)) => Ok(Prepared {
            lock,
            state,
            sandbox,
            agent,
            terminal,
            network_holder,
        }),
        Err(e) => {
            teardown(ctx, &state);
            if let Err(cleanup) = ctx.store.remove(lock, id) {
                warn!(ctx.log, "cleaning up after a failed create"; "error" => cleanup.to_string());
            }
            Err(e)
        }
    }
}

fn boot(
    ctx: &Context,
    bundle: &Bundle,
    state: &mut ContainerState,
    lock: &ContainerLock,
    hooks: HookTiming,
) -> Result<(Sandbox, Agent, Option<network::holder::NetnsHolder>), LifecycleError> {
    let id = state.id.clone();
    let started = std::time::Instant::now();
    let placement = Placement::of(&id, &state.annotations);
    let sandbox_id = placement.sandbox_id(&id).to_string();
    let guest_dir = PathBuf::from(GUEST_SANDBOX_DIR).join(&id);
    let member = matches!(placement, Placement::Join(_));
    // Refused before anything is made: a new sandbox's VM cannot share the host's stack.
    let mut network_mode = network::mode(&bundle.spec);
    if !member && network_mode == network::Mode::Host {
        return Err(LifecycleError::HostNetwork { id: id.clone() });
    }
    let mut network_holder = None;
    let blocks = devices::plan(&bundle.spec, devices::host_has_block).map_err(|source| {
        LifecycleError::Device {
            id: id.clone(),
            source,
        }
    })?;
    let block_root =
        block_rootfs::detect(&bundle.rootfs).map_err(|source| LifecycleError::BlockRootfs {
            id: id.clone(),
            source,
        })?;
    let mut guest =
        guest_spec::translate(&bundle.spec, &guest_dir.join("mounts"), member, |path| {
            std::fs::metadata(path).ok().map(|m| m.is_dir())
        })
        .map_err(|source| LifecycleError::GuestSpec {
            id: id.clone(),
            source,
        })?;
    let adjusted = &guest.adjustments;
    if !adjusted.unjoined_namespaces.is_empty() {
        info!(ctx.log, "host namespaces are not joined: the container gets its own in the guest";
              "container" => &id, "namespaces" => adjusted.unjoined_namespaces.join(","));
    }
    // Recorded before anything is built, so that teardown after any failure (or crash)
    // finds the sandbox this container was going into.
    state.sandbox = Some(sandbox_id.clone());
    ctx.store.save(lock, state)?;

    // A new sandbox's host cgroup: where its engine puts it (the sandbox container's
    // cgroupsPath), or ward's own. A pod member's path is not used: its processes are
    // the guest's, inside the sandbox's VM and its cgroup.
    let cgroup_path = match &placement {
        Placement::Own => {
            let given = bundle
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.cgroups_path().as_deref());
            Some(host_cgroup::sandbox_path(given, &sandbox_id).map_err(cgroup_err(&id))?)
        }
        Placement::Join(_) => None,
    };

    let sandboxes = ctx.sandboxes();
    let sandbox_lock = sandboxes.lock(&sandbox_id).map_err(pod_err(&id))?;
    let mut pod = match &placement {
        Placement::Own => {
            let pod = sandboxes
                .create(&sandbox_lock, &sandbox_id)
                .map_err(pod_err(&id))?;
            sandboxes.save(&sandbox_lock, &pod).map_err(pod_err(&id))?;
            shares::export(&sandboxes.shared_dir(&sandbox_id)).map_err(share_err(&id))?;
            pod
        }
        Placement::Join(_) => sandboxes.load(&sandbox_id).map_err(pod_err(&id))?,
    };
    // The container's rootfs and volumes go into the sandbox's exported directory before
    // the VM boots (a new sandbox) or while it runs (a pod's next container).
    let host_dir = sandboxes.shared_dir(&sandbox_id).join(&id);
    let read_only = bundle
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if read_only {
        // The guest cannot make its mount points in a rootfs that is read-only on the host.
        let wanted = mount_points::wanted(&guest.spec, &guest.binds, &guest_dir.join("mounts"));
        let made = mount_points::create_missing(&bundle.rootfs, &wanted).map_err(|source| {
            LifecycleError::MountPoint {
                id: id.clone(),
                source,
            }
        })?;
        if !made.is_empty() {
            let made: Vec<String> = made.iter().map(|p| p.display().to_string()).collect();
            info!(ctx.log, "made mount points in the read-only rootfs";
                  "container" => &id, "paths" => made.join(","));
        }
    }
    match &block_root {
        // The device goes to the guest once it runs; the host stops writing it now.
        Some(block) => {
            block_rootfs::hand_over(block).map_err(|source| LifecycleError::BlockRootfs {
                id: id.clone(),
                source,
            })?;
            info!(ctx.log, "the rootfs is a block device's file system: the VM gets the device";
                  "container" => &id, "device" => &block.source, "fstype" => &block.fstype,
                  "host_mount" => "read-only from now on");
        }
        None => {
            let rootfs = HostBind {
                source: bundle.rootfs.clone(),
                name: "rootfs".into(),
                is_dir: true,
                read_only,
                recursive: true,
            };
            shares::share(&host_dir, &[rootfs]).map_err(share_err(&id))?;
        }
    }
    shares::share(&host_dir.join("mounts"), &guest.binds).map_err(share_err(&id))?;

    let (sandbox, agent) = match &placement {
        Placement::Own => {
            let shared = vec![SharedDir {
                tag: SANDBOX_TAG.to_string(),
                host_path: sandboxes.shared_dir(&sandbox_id),
                read_only: false,
            }];
            let default = sizing::Size {
                vcpus: ctx.config.guest.vcpus,
                memory_mib: ctx.config.guest.memory_mib,
            };
            let host_cpus = sizing::host_cpus();
            let size = sizing::size(default, &bundle.spec, &state.annotations, host_cpus);
            let cgroups_path = bundle
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.cgroups_path().as_deref())
                .and_then(Path::to_str);
            let room = (pod::expects_members(&state.annotations, cgroups_path)
                || !blocks.is_empty()
                || block_root.is_some())
            .then(|| {
                let max_vcpus = match ctx.config.guest.max_vcpus {
                    0 => host_cpus,
                    n => n,
                };
                sizing::room(size, max_vcpus, sizing::host_memory_mib())
            });
            pod.base = size;
            // Sized for the most the VM may grow to: with room, it never changes.
            let limits = match room {
                Some(room) => Limits::for_vm(room.max_vcpus, room.max_memory_mib),
                None => Limits::for_vm(size.vcpus, size.memory_mib),
            };
            let path = cgroup_path.unwrap_or_default();
            let cgroup = HostCgroup::create(Path::new(host_cgroup::CGROUP_ROOT), &path, limits)
                .map_err(cgroup_err(&id))?;
            info!(ctx.log, "host cgroup made"; "sandbox" => &sandbox_id,
                  "path" => path.display().to_string(), "version" => format!("{:?}", cgroup.version),
                  "memory_bytes" => limits.memory_bytes, "cpu_quota_us" => limits.cpu_quota_us,
                  "pids" => limits.pids);
            let host_cgroups = cgroup.join_dirs();
            pod.host_cgroup = Some(cgroup);
            // Recorded before anything runs in it, so that teardown removes it.
            if let Err(e) = sandboxes.save(&sandbox_lock, &pod) {
                if let Some(cgroup) = pod.host_cgroup.take() {
                    let _ = cgroup.remove(Duration::ZERO);
                }
                return Err(pod_err(&id)(e));
            }
            // A new namespace that the engine's hooks attach to its network (docker):
            // they run now, on a holder's namespace, which is then carried like any other.
            if hooks == HookTiming::BeforeBoot
                && network_mode == network::Mode::Fresh
                && hooks_attach_network(state)
            {
                let holder =
                    network::holder::NetnsHolder::spawn().map_err(|source| LifecycleError::Io {
                        id: id.clone(),
                        what: "making a network namespace for the hooks".into(),
                        source,
                    })?;
                let mut context = state.hook_context();
                context.pid = Some(holder.pid);
                run_hooks_with(state, &context)?;
                info!(ctx.log, "prestart hooks ran before the VM, on a new network namespace";
                      "container" => &id, "holder" => holder.pid);
                network_mode = network::Mode::Namespace(holder.netns_path());
                network_holder = Some(holder);
            }
            // The pod's network: taps beside its namespace's interfaces, recorded before
            // anything can fail so that teardown gives the interfaces their ingress back.
            let carried = match network_mode.clone() {
                network::Mode::Host | network::Mode::Fresh => None,
                network::Mode::Namespace(path) => {
                    let carried =
                        network::carry(&path).map_err(|source| LifecycleError::Network {
                            id: id.clone(),
                            source,
                        })?;
                    // A holder's namespace is not recorded: it lives only as long as the
                    // holder and then the relay, and its /proc path may name another
                    // process's namespace after them.
                    if network_holder.is_none() {
                        pod.network = Some(carried.record());
                        sandboxes.save(&sandbox_lock, &pod).map_err(pod_err(&id))?;
                    }
                    Some(carried)
                }
            };
            let guest_network = carried.as_ref().map(network::GuestNetwork::of);
            if guest_network
                .as_ref()
                .is_some_and(|n| !n.interfaces.is_empty())
            {
                // The guest's own namespace holds the pod's NICs; its containers share it.
                guest_spec::share_guest_network(&mut guest);
            }
            let nics = carried.map(network::Carried::into_nics).unwrap_or_default();
            let plan = LaunchPlan {
                size,
                shared_dirs: shared,
                hotplug: room,
                host_cgroups,
                nics,
            };
            let (sandbox, agent) = launch(
                ctx,
                &sandbox_id,
                &sandboxes.vm_dir(&sandbox_id),
                &plan,
                |vm| {
                    // Recorded before anything else can fail, so a crash from here on
                    // leaves processes that `delete --force` can find.
                    pod.vm = Some(vm.clone());
                    state.vm = Some(vm.clone());
                    sandboxes.save(&sandbox_lock, &pod).map_err(pod_err(&id))?;
                    Ok(ctx.store.save(lock, state)?)
                },
            )?;
            info!(ctx.log, "agent ready"; "container" => &id, "boot_ms" => started.elapsed().as_millis() as u64);
            if let Some(net) = guest_network.filter(|n| !n.interfaces.is_empty()) {
                agent
                    .setup_network(&net.interfaces, &net.routes, "")
                    .map_err(agent_err(&id))?;
                info!(ctx.log, "network carried into the VM"; "container" => &id,
                      "interfaces" => net.describe());
            }
            (sandbox, agent)
        }
        Placement::Join(_) => {
            let vm = pod
                .vm
                .clone()
                .ok_or_else(|| pod_err(&id)(SandboxStoreError::NotFound(sandbox_id.clone())))?;
            state.vm = Some(vm.clone());
            ctx.store.save(lock, state)?;
            let sandbox = Sandbox::attach(&ctx.config, vm).map_err(sandbox_err(&id))?;
            let agent = sandbox.agent().map_err(sandbox_err(&id))?;
            let share = sizing::container_share(&bundle.spec);
            if share != sizing::Size::default() {
                if sandbox.can_grow() {
                    pod.added.insert(id.clone(), share);
                    sandboxes.save(&sandbox_lock, &pod).map_err(pod_err(&id))?;
                    let target = sizing::target(pod.base, pod.added.values());
                    if resize(&sandbox, &agent, target, pod.host_cgroup.as_mut(), &ctx.log) {
                        sandboxes.save(&sandbox_lock, &pod).map_err(pod_err(&id))?;
                    }
                } else {
                    info!(ctx.log, "the pod's VM cannot grow: the container's limits apply in its cgroup only";
                          "container" => &id, "vcpus" => share.vcpus, "memory_mib" => share.memory_mib);
                }
            }
            let sandbox_pid = pod
                .sandbox_container()
                .and_then(|c| ctx.store.load(c).ok())
                .and_then(|s| s.relay.map(|r| r.pid));
            let mode = network::mode(&bundle.spec);
            if let Some(netns) = member_network::own_namespace(&mode, &pod, sandbox_pid) {
                let path = member_network::join(
                    &sandbox,
                    &agent,
                    &mut pod,
                    |p| sandboxes.save(&sandbox_lock, p).map_err(|e| e.to_string()),
                    &id,
                    &netns,
                    &ctx.log,
                )
                .map_err(|source| LifecycleError::MemberNetwork {
                    id: id.clone(),
                    source: Box::new(source),
                })?;
                guest_spec::own_guest_network(&mut guest, &path);
            }
            (sandbox, agent)
        }
    };

    for block in &blocks {
        // Disk IDs are at most 20 characters: 8 for the container, the entry's index.
        let disk_id = format!("d{}-{}", store::short_name(&id), block.index);
        let disk = pass_through(&sandboxes, &sandbox_id, &id, block, &disk_id)?;
        // Recorded before it is added, so that teardown removes it whatever happens.
        pod.disks
            .entry(id.clone())
            .or_default()
            .push(disk.id.clone());
        sandboxes.save(&sandbox_lock, &pod).map_err(pod_err(&id))?;
        let started = std::time::Instant::now();
        let info = sandbox.add_disk(&agent, &disk).map_err(sandbox_err(&id))?;
        info!(ctx.log, "block device passed through"; "container" => &id,
              "host" => format!("{}:{}", block.major, block.minor), "guest" => &info.path,
              "ms" => started.elapsed().as_millis() as u64);
        devices::retarget(
            &mut guest.spec,
            block,
            i64::from(info.major),
            i64::from(info.minor),
        );
    }

    let mut rootfs_guest_path = guest_dir.join("rootfs");
    let mut storages = Vec::new();
    if let Some(block) = &block_root {
        let device = devices::BlockDevice {
            index: 0,
            path: block.mount_point.clone(),
            major: i64::from(block.major),
            minor: i64::from(block.minor),
        };
        let disk_id = format!("r{}", store::short_name(&id));
        let mut disk = pass_through(&sandboxes, &sandbox_id, &id, &device, &disk_id)?;
        disk.read_only = read_only;
        // Recorded before it is added, so that teardown removes it whatever happens.
        pod.disks
            .entry(id.clone())
            .or_default()
            .push(disk.id.clone());
        sandboxes.save(&sandbox_lock, &pod).map_err(pod_err(&id))?;
        let started = std::time::Instant::now();
        let info = sandbox.add_disk(&agent, &disk).map_err(sandbox_err(&id))?;
        info!(ctx.log, "rootfs device attached"; "container" => &id, "guest" => &info.path,
              "ms" => started.elapsed().as_millis() as u64);
        rootfs_guest_path = PathBuf::from(GUEST_BLOCK_ROOTFS_DIR).join(&id);
        storages.push(Storage {
            source: info.path.clone(),
            fstype: block.fstype.clone(),
            options: if read_only {
                vec!["ro".to_string()]
            } else {
                Vec::new()
            },
            mount_point: rootfs_guest_path.display().to_string(),
            ..Default::default()
        });
    }
    let sandbox_storage = shared_storage(
        sandbox.vm.shared_fs,
        SANDBOX_TAG,
        GUEST_SANDBOX_DIR.to_string(),
    );
    let spec_json = serde_json::to_vec(&guest.spec).map_err(|e| LifecycleError::Io {
        id: id.clone(),
        what: "serializing the OCI spec".into(),
        source: e.into(),
    })?;
    let request = NewContainer {
        id: &id,
        spec_json,
        sandbox_storages: vec![sandbox_storage],
        storages,
        rootfs_guest_path: &rootfs_guest_path.display().to_string(),
        sandbox_container: if member {
            pod.sandbox_container()
        } else {
            None
        },
        joined_namespaces: &guest.adjustments.pod_namespaces,
    };
    agent.create_container(request).map_err(agent_err(&id))?;
    pod.containers.push(id.clone());
    sandboxes.save(&sandbox_lock, &pod).map_err(pod_err(&id))?;
    if member {
        info!(ctx.log, "container joined its pod's VM"; "container" => &id, "sandbox" => &sandbox_id,
              "namespaces" => guest.adjustments.pod_namespaces.join(","),
              "ms" => started.elapsed().as_millis() as u64);
    }
    Ok((sandbox, agent, network_holder))
}

/// A host node for block device `block` in the sandbox's directory (QEMU and ward-vmm
/// open disks by path; the spec gives only numbers), and the disk that attaches it.
fn pass_through(
    sandboxes: &SandboxStore,
    sandbox_id: &str,
    id: &str,
    block: &devices::BlockDevice,
    disk_id: &str,
) -> Result<DiskSpec, LifecycleError> {
    let dir = sandboxes.device_dir(sandbox_id);
    let io_err = |what: String, source: std::io::Error| LifecycleError::Io {
        id: id.to_string(),
        what,
        source,
    };
    std::fs::create_dir_all(&dir).map_err(|e| io_err(format!("creating {}", dir.display()), e))?;
    let node = dir.join(disk_id);
    let (Ok(major), Ok(minor)) = (u64::try_from(block.major), u64::try_from(block.minor)) else {
        return Err(io_err(
            format!(
                "device {}: bad number {}:{}",
                block.path.display(),
                block.major,
                block.minor
            ),
            std::io::ErrorKind::InvalidInput.into(),
        ));
    };
    let _ = std::fs::remove_file(&node);
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(major, minor),
    )
    .map_err(|e| {
        io_err(
            format!("making the device node {}", node.display()),
            e.into(),
        )
    })?;
    Ok(DiskSpec {
        id: disk_id.to_string(),
        path: node,
        read_only: false,
    })
}

/// Removes the disks hot-added for container `id`, with their host nodes.
fn remove_disks(
    sandboxes: &SandboxStore,
    pod: &mut SandboxState,
    vm: Option<(&Sandbox, &Agent)>,
    id: &str,
    log: &Logger,
) {
    for disk in pod.disks.remove(id).unwrap_or_default() {
        if let Some((vm, agent)) = vm {
            if let Err(e) = vm.remove_disk(agent, &disk) {
                warn!(log, "removing a disk"; "disk" => &disk, "error" => e.to_string());
            }
        }
        let _ = std::fs::remove_file(sandboxes.device_dir(&pod.id).join(&disk));
    }
}

/// Brings a running sandbox's VM to `size` (vCPUs onlined by the agent, memory onlined by
/// the guest kernel). A VM that cannot reach it stays as it is: the containers' cgroup
/// limits still hold, so this is logged, not fatal.
///
/// The host cgroup's limits follow the VM's maximum. A VM with hotplug room got limits
/// for all of it at boot, so they stay. One without (ward-vmm grows without declared room)
/// has its size as its maximum: its limits are raised before it grows and lowered once
/// it has shrunk (left raised if a step failed). Returns whether they changed, for the
/// caller to save the sandbox.
fn resize(
    sandbox: &Sandbox,
    agent: &Agent,
    size: sizing::Size,
    cgroup: Option<&mut HostCgroup>,
    log: &Logger,
) -> bool {
    let started = std::time::Instant::now();
    let vcpus = match sandbox.vm.hotplug {
        Some(room) => size.vcpus.min(room.max_vcpus),
        None => size.vcpus,
    };
    let mut cgroup = cgroup.filter(|_| sandbox.vm.hotplug.is_none());
    let before = cgroup.as_ref().map(|c| c.limits);
    let set_limits = |cgroup: &mut Option<&mut HostCgroup>, limits: Limits| {
        if let Some(cgroup) = cgroup.as_deref_mut() {
            if cgroup.limits != limits {
                if let Err(e) = cgroup.set_limits(limits) {
                    warn!(log, "resizing the host cgroup"; "error" => e.to_string());
                }
            }
        }
    };
    let wanted = Limits::for_vm(vcpus, size.memory_mib);
    if let Some(current) = before {
        set_limits(&mut cgroup, wanted.max(current));
    }
    let mut resized = true;
    match sandbox.set_vcpus(agent, vcpus) {
        Ok(online) => info!(log, "vCPUs hotplugged"; "vcpus" => vcpus, "online" => online,
                            "ms" => started.elapsed().as_millis() as u64),
        Err(e) => {
            resized = false;
            warn!(log, "resizing the VM's vCPUs"; "vcpus" => vcpus, "error" => e.to_string())
        }
    }
    let started = std::time::Instant::now();
    let mut memory_mib = size.memory_mib;
    match sandbox.set_memory(size.memory_mib) {
        Ok(now) => {
            memory_mib = now;
            info!(log, "memory hotplugged"; "asked_mib" => size.memory_mib, "memory_mib" => now,
                         "ms" => started.elapsed().as_millis() as u64)
        }
        Err(e) => {
            resized = false;
            warn!(log, "resizing the VM's memory"; "memory_mib" => size.memory_mib, "error" => e.to_string())
        }
    }
    if resized {
        set_limits(&mut cgroup, Limits::for_vm(vcpus, memory_mib));
    }
    cgroup.map(|c| c.limits) != before
}

/// Launches a sandbox's VM and waits for its agent; `record` is called with each VM as
/// soon as it runs.
fn launch(
    ctx: &Context,
    sandbox_id: &str,
    run_dir: &Path,
    plan: &LaunchPlan,
    mut record: impl FnMut(&ward_hypervisor::VmInstance) -> Result<(), LifecycleError>,
) -> Result<(Sandbox, Agent), LifecycleError> {
    let timeout = Duration::from_secs(ctx.config.guest.boot_timeout_secs);
    let size = plan.size;
    let mut attempt = 1;
    Sandbox::admit(&ctx.config, sandbox_id, &ctx.log).map_err(sandbox_err(sandbox_id))?;
    loop {
        let sandbox = Sandbox::launch(&ctx.config, sandbox_id, run_dir, plan, &ctx.log)
            .map_err(sandbox_err(sandbox_id))?;
        record(&sandbox.vm)?;
        match sandbox.wait_for_agent(timeout, &ctx.log) {
            Ok(agent) => {
                // A VM whose vCPUs are all present from boot starts with its own share
                // of them online; containers that join bring more online.
                if sandbox
                    .vm
                    .hotplug
                    .is_some_and(|room| room.cpus_preallocated)
                {
                    sandbox
                        .set_vcpus(&agent, size.vcpus)
                        .map_err(sandbox_err(sandbox_id))?;
                }
                return Ok((sandbox, agent));
            }
            // The guest is up but its vsock device never came to life: a fresh VM is
            // the cure, once; a second time means something else is wrong.
            Err(e @ SandboxError::Unreachable { .. }) if attempt < BOOT_ATTEMPTS => {
                warn!(ctx.log, "relaunching the VM"; "sandbox" => sandbox_id, "attempt" => attempt,
                      "error" => e.to_string());
                if let Err(e) = sandbox.shutdown(VM_SHUTDOWN_GRACE) {
                    warn!(ctx.log, "stopping the VM"; "sandbox" => sandbox_id, "error" => e.to_string());
                }
                // The next VM's console must not start with this one's "agent ready".
                let _ = std::fs::remove_file(&sandbox.vm.console_log);
                attempt += 1;
            }
            Err(e) => return Err(sandbox_err(sandbox_id)(e)),
        }
    }
}

/// How the guest mounts a directory the VM shares under `tag`.
fn shared_storage(fs: SharedFs, tag: &str, mount_point: String) -> Storage {
    let (fstype, options) = match fs {
        SharedFs::NineP => (
            "9p",
            vec!["trans=virtio", "version=9p2000.L", "msize=262144"],
        ),
        SharedFs::Virtiofs => ("virtiofs", vec![]),
    };
    Storage {
        source: tag.to_string(),
        fstype: fstype.to_string(),
        options: options.into_iter().map(str::to_string).collect(),
        mount_point,
        ..Default::default()
    }
}

/// Stops every host process of the container that still runs, and takes the container
/// out of its sandbox: the last container of a sandbox takes the VM with it. Never fails:
/// what cannot be stopped is logged, and the caller decides whether to keep the state.
pub fn teardown(ctx: &Context, state: &ContainerState) {
    let me = std::process::id() as i32;
    for process in state.relays() {
        if process.pid != me {
            process.terminate(Duration::from_secs(1));
        }
    }
    // A container created before its sandbox was recorded has nothing else.
    if let Some(sandbox_id) = &state.sandbox {
        leave_sandbox(ctx, sandbox_id, state);
    }
}

/// Takes container `state` out of sandbox `sandbox_id`.
fn leave_sandbox(ctx: &Context, sandbox_id: &str, state: &ContainerState) {
    let id = state.id.as_str();
    let log = ctx
        .log
        .new(slog::o!("container" => id.to_string(), "sandbox" => sandbox_id.to_string()));
    let sandboxes = ctx.sandboxes();
    let lock = match sandboxes.lock(sandbox_id) {
        Ok(lock) => lock,
        Err(e) => {
            warn!(log, "cannot lock the sandbox"; "error" => e.to_string());
            return;
        }
    };
    let shared = sandboxes.shared_dir(sandbox_id);
    let mut pod = match sandboxes.load(sandbox_id) {
        Ok(pod) => pod,
        Err(SandboxStoreError::NotFound(_)) => {
            // A member whose sandbox is gone, or a create that crashed before the
            // sandbox's first save: only host mounts can be left.
            if let Err(e) = shares::remove_unmounted(&shared.join(id)) {
                warn!(log, "releasing the shared host paths"; "error" => e.to_string());
            }
            return;
        }
        Err(e) => {
            warn!(log, "reading the sandbox"; "error" => e.to_string());
            return;
        }
    };
    // Members that no longer exist (a crashed create) do not keep the VM.
    let others: Vec<String> = pod
        .containers
        .iter()
        .filter(|c| c.as_str() != id && ctx.store.load(c).is_ok())
        .cloned()
        .collect();
    let vm = pod
        .vm
        .clone()
        .and_then(|vm| Sandbox::attach(&ctx.config, vm).ok());
    let vm_running = vm.as_ref().is_some_and(Sandbox::is_running);
    if !others.is_empty() && vm_running {
        let agent = vm.as_ref().and_then(|vm| vm.agent().ok());
        if let Some(agent) = &agent {
            // A container the agent never made (or already removed) is fine.
            if let Err(e) = agent.remove_container(id) {
                info!(log, "removing the container in the guest"; "error" => e.to_string());
            }
        }
        // What it brought to the VM goes with it.
        let both = vm.as_ref().zip(agent.as_ref());
        member_network::leave(both, &mut pod, id, &log);
        remove_disks(&sandboxes, &mut pod, both, id, &log);
        if pod.added.remove(id).is_some() {
            if let (Some(vm), Some(agent)) = (&vm, &agent) {
                let target = sizing::target(pod.base, pod.added.values());
                // Saved below in any case.
                resize(vm, agent, target, pod.host_cgroup.as_mut(), &log);
            }
        }
        if let Err(e) = shares::remove_unmounted(&shared.join(id)) {
            warn!(log, "releasing the shared host paths"; "error" => e.to_string());
        }
        pod.containers = others;
        if let Err(e) = sandboxes.save(&lock, &pod) {
            warn!(log, "saving the sandbox"; "error" => e.to_string());
        }
        info!(log, "container left its sandbox"; "remaining" => pod.containers.len());
        return;
    }
    if let Some(vm) = &vm {
        if let Err(e) = vm.shutdown(VM_SHUTDOWN_GRACE) {
            warn!(log, "stopping the VM"; "error" => e.to_string());
        }
    }
    // Whatever the backend could not stop, stop by record.
    for process in pod.vm.iter().flat_map(|vm| vm.processes.iter()) {
        process.terminate(Duration::from_secs(1));
    }
    // With the VM gone (and its taps with it), the pod's interfaces get their own
    // ingress back.
    if let Some(net) = &pod.network {
        if let Err(e) = network::release(net) {
            warn!(log, "releasing the pod's network"; "error" => e.to_string());
        }
    }
    member_network::release_all(&mut pod, &log);
    // With the file server gone, the host binds it served can go.
    if let Err(e) = shares::release(&shared) {
        warn!(log, "releasing the shared host paths"; "error" => e.to_string());
    }
    // And with every process of the VM stopped, its host cgroup (they may still be
    // exiting: removal waits a little for them).
    if let Some(cgroup) = &pod.host_cgroup {
        match cgroup.remove(host_cgroup::REMOVE_TIMEOUT) {
            Ok(()) => {
                info!(log, "host cgroup removed"; "path" => cgroup.path.display().to_string())
            }
            Err(e) => warn!(log, "removing the host cgroup"; "error" => e.to_string()),
        }
    }
    match sandboxes.remove(&lock, sandbox_id) {
        Ok(()) => info!(log, "sandbox removed with its last container"),
        Err(e) => warn!(log, "removing the sandbox"; "error" => e.to_string()),
    }
}

/// Starts the relay for a created container's init process, or for one of its exec
/// processes, and waits until its streams are attached.
/// With a console socket, the process has a terminal: its master goes to the socket and
/// the relay gets the slave as its stdio.
pub fn spawn_relay(
    ctx: &Context,
    id: &str,
    exec_id: Option<&str>,
    console_socket: Option<&Path>,
) -> Result<ProcessRecord, LifecycleError> {
    spawn_relay_in(ctx, id, exec_id, console_socket, RelayNetwork::Caller)
}

/// The network namespace a relay runs in.
#[derive(Debug, Clone, Copy)]
enum RelayNetwork {
    /// Ours.
    Caller,
    /// A new one.
    New,
    /// The one open at this descriptor, which stays open until the relay has started.
    Join(std::os::fd::RawFd),
}

/// [`spawn_relay`], the relay in the network namespace `network` says.
fn spawn_relay_in(
    ctx: &Context,
    id: &str,
    exec_id: Option<&str>,
    console_socket: Option<&Path>,
    network: RelayNetwork,
) -> Result<ProcessRecord, LifecycleError> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;

    let io_err = |what: &str, source: std::io::Error| LifecycleError::Io {
        id: id.to_string(),
        what: what.to_string(),
        source,
    };
    let exe = std::env::current_exe().map_err(|e| io_err("finding the ward binary", e))?;
    let (ready_read, ready_write): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err("creating the relay's ready pipe", e.into()))?;
    let ready_fd = ready_write.as_raw_fd();
    let mut command = std::process::Command::new(exe);
    command.args(&ctx.relay_flags).arg("relay");
    if let Some(exec_id) = exec_id {
        command.arg("--exec-id").arg(exec_id);
    }
    if let Some(socket) = console_socket {
        let slave = crate::relay::terminal::send_console(socket).map_err(|source| {
            LifecycleError::Terminal {
                id: id.to_string(),
                source,
            }
        })?;
        let stdio = |what| {
            slave
                .try_clone()
                .map(std::process::Stdio::from)
                .map_err(|e| io_err(what, e))
        };
        command
            .arg("--tty")
            .stdin(stdio("duplicating the terminal for the relay")?)
            .stdout(stdio("duplicating the terminal for the relay")?)
            .stderr(stdio("duplicating the terminal for the relay")?);
    }
    command.arg(id).env(
        crate::cli::relay::READY_FD_ENV,
        crate::cli::relay::READY_FD.to_string(),
    );
    // SAFETY: between fork and exec the closure only calls async-signal-safe functions
    // (setsid, unshare, setns, dup2) on descriptors that stay open in the parent until
    // spawn returns.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            let entered = match network {
                RelayNetwork::Caller => 0,
                RelayNetwork::New => libc::unshare(libc::CLONE_NEWNET),
                RelayNetwork::Join(fd) => libc::setns(fd, libc::CLONE_NEWNET),
            };
            if entered != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::dup2(ready_fd, crate::cli::relay::READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| io_err("starting the relay", e))?;
    drop(ready_write);
    let pid = child.id() as i32;
    // The relay writes "ok" once it is attached, or the reason it failed.
    let mut answer = String::new();
    std::fs::File::from(ready_read)
        .read_to_string(&mut answer)
        .map_err(|e| io_err("reading the relay's ready pipe", e))?;
    if answer.trim() != "ok" {
        let message = if answer.is_empty() {
            "it exited before attaching to the container's stdio".to_string()
        } else {
            answer.trim().to_string()
        };
        return Err(LifecycleError::Relay {
            id: id.to_string(),
            message,
        });
    }
    // The relay outlives us; whoever inherits it (init or a subreaper) reaps it.
    std::mem::forget(child);
    ProcessRecord::of("relay", pid).ok_or_else(|| LifecycleError::Relay {
        id: id.to_string(),
        message: "it exited right after attaching".into(),
    })
}

/// Writes `--pid-file`, when one was asked for, naming the container in any error.
pub fn write_pid_file(id: &str, path: Option<&Path>, pid: i32) -> Result<(), LifecycleError> {
    let Some(path) = path else {
        return Ok(());
    };
    replace_pid_file(path, pid).map_err(|source| LifecycleError::Io {
        id: id.to_string(),
        what: format!("writing pid file {}", path.display()),
        source,
    })
}

/// Writes the PID file as runc does: to a temporary file renamed into place.
fn replace_pid_file(path: &Path, pid: i32) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} is not a file path", path.display())))?;
    let tmp: PathBuf = dir
        .unwrap_or(Path::new("."))
        .join(format!(".{}", name.to_string_lossy()));
    std::fs::write(&tmp, pid.to_string())?;
    std::fs::rename(&tmp, path)
}

/// `ward create`.
pub fn create(
    ctx: &Context,
    bundle: &Path,
    id: &str,
    pid_file: Option<&Path>,
    console_socket: Option<&Path>,
) -> Result<(), LifecycleError> {
    let console = Console {
        detach: true,
        socket: console_socket,
    };
    let Prepared {
        lock,
        mut state,
        sandbox,
        agent,
        network_holder,
        ..
    } = prepare_with(ctx, bundle, id, console, HookTiming::BeforeBoot)?;
    drop(agent);
    // The relay is the PID engines see as the container's, and prestart hooks (docker's
    // libnetwork) configure /proc/PID/ns/net: a container that asks for a new network
    // namespace gets one on the host too (the one its hooks attached, if they ran before
    // the VM), so such a hook never touches the host's own.
    let network = match &network_holder {
        Some(holder) => RelayNetwork::Join(holder.netns().as_raw_fd()),
        None => match oci_spec::runtime::Spec::load(bundle.join("config.json")) {
            Ok(spec) if network::mode(&spec) == network::Mode::Fresh => RelayNetwork::New,
            _ => RelayNetwork::Caller,
        },
    };
    let finish = (|| {
        let relay = spawn_relay_in(ctx, id, None, console_socket, network)?;
        state.relay = Some(relay.clone());
        if network_holder.is_none() {
            run_create_hooks(&state)?;
        }
        state.status = Status::Created;
        ctx.store.save(&lock, &state)?;
        write_pid_file(id, pid_file, relay.pid)
    })();
    if let Err(e) = finish {
        drop(sandbox);
        teardown(ctx, &state);
        let _ = ctx.store.remove(lock, id);
        // A failed prestart or createRuntime hook destroys the container, and a
        // destroyed container gets its poststop hooks.
        if matches!(e, LifecycleError::Hook { .. }) {
            run_late_hooks(ctx, Stage::Poststop, &state);
        }
        return Err(e);
    }
    info!(ctx.log, "container created"; "container" => id);
    Ok(())
}

/// prestart then createRuntime: the container exists in its VM and its relay runs; a
/// failure fails the create.
pub fn run_create_hooks(state: &ContainerState) -> Result<(), LifecycleError> {
    run_hooks_with(state, &state.hook_context())
}

/// The hook docker's libnetwork attaches a container to its network with (its argv[0];
/// the program is dockerd itself, `/proc/<dockerd>/exe`).
const DOCKER_NETWORK_HOOK: &str = "libnetwork-setkey";

/// Whether a prestart or createRuntime hook attaches the container to its engine's
/// network: docker's. Only then do the hooks run before the VM, on a holder's PID (the
/// relay does not exist yet); other hooks keep seeing the relay's PID, as `state` shows.
fn hooks_attach_network(state: &ContainerState) -> bool {
    let attaches = |list: &Option<Vec<oci_spec::runtime::Hook>>| {
        list.iter().flatten().any(|hook| {
            hook.args()
                .as_ref()
                .and_then(|a| a.first())
                .is_some_and(|a| a == DOCKER_NETWORK_HOOK)
        })
    };
    state
        .hooks
        .as_ref()
        .is_some_and(|h| attaches(h.prestart()) || attaches(h.create_runtime()))
}

/// prestart then createRuntime, telling them `context`.
fn run_hooks_with(
    state: &ContainerState,
    context: &crate::hooks::HookContext,
) -> Result<(), LifecycleError> {
    let Some(hooks) = &state.hooks else {
        return Ok(());
    };
    for stage in [Stage::Prestart, Stage::CreateRuntime] {
        hooks::run_stage(stage, hooks, context).map_err(|source| LifecycleError::Hook {
            id: state.id.clone(),
            source,
        })?;
    }
    Ok(())
}

/// poststart or poststop: the container's life goes on (or has ended) whatever they do,
/// so a failure is a warning.
pub fn run_late_hooks(ctx: &Context, stage: Stage, state: &ContainerState) {
    let Some(hooks) = &state.hooks else {
        return;
    };
    if let Err(e) = hooks::run_stage(stage, hooks, &state.hook_context()) {
        warn!(ctx.log, "hook failed"; "container" => &state.id, "error" => e.to_string());
    }
}

/// Loads a container whose status is one of `allowed` and connects to its agent.
fn agent_of(
    ctx: &Context,
    id: &str,
    action: &'static str,
    allowed: &[Status],
) -> Result<(ContainerState, Sandbox, Agent), LifecycleError> {
    let state = ctx.store.load(id)?;
    let status = state.current_status();
    let wrong_state = |status| LifecycleError::WrongState {
        action,
        id: id.to_string(),
        status,
    };
    if !allowed.contains(&status) {
        return Err(wrong_state(status));
    }
    let vm = state.vm.clone().ok_or(wrong_state(Status::Creating))?;
    let sandbox = Sandbox::attach(&ctx.config, vm).map_err(sandbox_err(id))?;
    let agent = sandbox.agent().map_err(sandbox_err(id))?;
    Ok((state, sandbox, agent))
}

/// Starts an extra process in a running container; returns the exec ID and the agent,
/// the process's output waiting in the guest until its streams are attached.
pub fn exec(
    ctx: &Context,
    id: &str,
    process_json: Vec<u8>,
) -> Result<(String, Sandbox, Agent), LifecycleError> {
    let (_, sandbox, agent) = agent_of(ctx, id, "exec in", &[Status::Running])?;
    let exec_id = new_exec_id();
    agent
        .exec_process(id, &exec_id, process_json)
        .map_err(agent_err(id))?;
    info!(ctx.log, "process started"; "container" => id, "exec" => &exec_id);
    Ok((exec_id, sandbox, agent))
}

/// Unique within a container: our PID (no two live `ward exec` share one) and the time.
fn new_exec_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("exec-{}-{nanos}", std::process::id())
}

/// Records a detached exec's relay, so `delete --force` finds it.
pub fn record_exec_relay(
    ctx: &Context,
    id: &str,
    relay: ProcessRecord,
) -> Result<(), LifecycleError> {
    let lock = ctx.store.lock(id)?;
    let mut state = ctx.store.load(id)?;
    state.exec_relays.retain(|r| r.is_alive());
    state.exec_relays.push(relay);
    ctx.store.save(&lock, &state)?;
    Ok(())
}

/// `ward start`.
pub fn start(ctx: &Context, id: &str) -> Result<(), LifecycleError> {
    let lock = ctx.store.lock(id)?;
    let (mut state, _, agent) = agent_of(ctx, id, "start", &[Status::Created])?;
    agent.start_container(id).map_err(agent_err(id))?;
    state.status = Status::Running;
    ctx.store.save(&lock, &state)?;
    info!(ctx.log, "container started"; "container" => id);
    run_late_hooks(ctx, Stage::Poststart, &state);
    Ok(())
}

/// `ward kill`.
pub fn kill(ctx: &Context, id: &str, signal: i32, all: bool) -> Result<(), LifecycleError> {
    let allowed = [Status::Created, Status::Running, Status::Paused];
    let (_, _, agent) = agent_of(ctx, id, "kill", &allowed)?;
    agent
        .signal_process(id, "", signal, all)
        .map_err(agent_err(id))?;
    info!(ctx.log, "signal sent"; "container" => id, "signal" => signal, "all" => all);
    Ok(())
}

/// `ward pause` (`paused`) and `ward resume`.
pub fn set_paused(ctx: &Context, id: &str, paused: bool) -> Result<(), LifecycleError> {
    let lock = ctx.store.lock(id)?;
    let (action, from, to) = if paused {
        ("pause", Status::Running, Status::Paused)
    } else {
        ("resume", Status::Paused, Status::Running)
    };
    let (mut state, _, agent) = agent_of(ctx, id, action, &[from])?;
    agent.set_paused(id, paused).map_err(agent_err(id))?;
    state.status = to;
    ctx.store.save(&lock, &state)?;
    info!(ctx.log, "container {}", to; "container" => id);
    Ok(())
}

/// `ward update`: new limits for a live container's cgroup in the guest.
pub fn update(ctx: &Context, id: &str, resources_json: Vec<u8>) -> Result<(), LifecycleError> {
    let allowed = [Status::Created, Status::Running, Status::Paused];
    let (state, sandbox, agent) = agent_of(ctx, id, "update", &allowed)?;
    let resources: Option<oci_spec::runtime::LinuxResources> =
        serde_json::from_slice(&resources_json).ok();
    agent.update(id, resources_json).map_err(agent_err(id))?;
    info!(ctx.log, "resources updated"; "container" => id);
    if let (Some(resources), Some(sandbox_id)) = (resources, &state.sandbox) {
        resize_for_update(ctx, id, sandbox_id, &sandbox, &agent, &resources);
    }
    Ok(())
}

/// After an update of container `id`'s limits, brings its sandbox's VM to the size its
/// containers now ask for (Kata resizes the VM on UpdateContainer too).
fn resize_for_update(
    ctx: &Context,
    id: &str,
    sandbox_id: &str,
    sandbox: &Sandbox,
    agent: &Agent,
    resources: &oci_spec::runtime::LinuxResources,
) {
    if !sandbox.can_grow() {
        return;
    }
    let log = ctx
        .log
        .new(slog::o!("container" => id.to_string(), "sandbox" => sandbox_id.to_string()));
    let sandboxes = ctx.sandboxes();
    let Ok(lock) = sandboxes.lock(sandbox_id) else {
        return;
    };
    let mut pod = match sandboxes.load(sandbox_id) {
        Ok(pod) => pod,
        Err(e) => {
            warn!(log, "reading the sandbox"; "error" => e.to_string());
            return;
        }
    };
    let defaults = sizing::Size {
        vcpus: ctx.config.guest.vcpus,
        memory_mib: ctx.config.guest.memory_mib,
    };
    if id == sandbox_id {
        // The sandbox's own container: its limits are in the boot size.
        let own = sizing::Size {
            vcpus: pod.base.vcpus.saturating_sub(defaults.vcpus),
            memory_mib: pod.base.memory_mib.saturating_sub(defaults.memory_mib),
        };
        pod.base = sizing::target(defaults, [&sizing::updated_share(own, resources)]);
    } else {
        let own = pod.added.get(id).copied().unwrap_or_default();
        pod.added
            .insert(id.to_string(), sizing::updated_share(own, resources));
    }
    if let Err(e) = sandboxes.save(&lock, &pod) {
        warn!(log, "saving the sandbox"; "error" => e.to_string());
        return;
    }
    let target = sizing::target(pod.base, pod.added.values());
    if resize(sandbox, agent, target, pod.host_cgroup.as_mut(), &log) {
        if let Err(e) = sandboxes.save(&lock, &pod) {
            warn!(log, "saving the sandbox"; "error" => e.to_string());
        }
    }
}

/// `ward events`: the container's cgroup statistics.
pub fn stats(
    ctx: &Context,
    id: &str,
) -> Result<ward_agent_protocol::agent::StatsContainerResponse, LifecycleError> {
    let allowed = [Status::Created, Status::Running, Status::Paused];
    let (_, _, agent) = agent_of(ctx, id, "read the statistics of", &allowed)?;
    agent.stats(id).map_err(agent_err(id))
}

/// `ward ps`: the container's processes as its guest sees them.
pub fn processes(
    ctx: &Context,
    id: &str,
) -> Result<Vec<ward_agent_protocol::agent::ProcessInfo>, LifecycleError> {
    let allowed = [Status::Created, Status::Running, Status::Paused];
    let (_, _, agent) = agent_of(ctx, id, "list the processes of", &allowed)?;
    agent.list_processes(id).map_err(agent_err(id))
}

/// `ward delete`.
pub fn delete(ctx: &Context, id: &str, force: bool) -> Result<(), LifecycleError> {
    let lock = ctx.store.lock(id)?;
    let state = match ctx.store.load(id) {
        Ok(state) => state,
        // A create that crashed before its first save leaves only the directory.
        Err(StoreError::NotFound(_)) => {
            ctx.store.remove(lock, id)?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let status = state.current_status();
    // A create in progress is not stopped either: deleting it needs --force.
    if matches!(status, Status::Running | Status::Paused | Status::Creating) && !force {
        return Err(LifecycleError::NotStopped {
            id: id.to_string(),
            status,
        });
    }
    teardown(ctx, &state);
    ctx.store.remove(lock, id)?;
    info!(ctx.log, "container deleted"; "container" => id);
    run_late_hooks(ctx, Stage::Poststop, &state);
    Ok(())
}

/// Records the exit status of the container's init process.
pub fn record_exit(ctx: &Context, id: &str, exit_status: i32) -> Result<(), LifecycleError> {
    let lock = ctx.store.lock(id)?;
    let mut state = ctx.store.load(id)?;
    state.exit_status = Some(exit_status);
    state.status = Status::Stopped;
    ctx.store.save(&lock, &state)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        write_pid_file("c", Some(&path), 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "4242");
        write_pid_file("c", Some(&path), 7).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "7");
    }
}
