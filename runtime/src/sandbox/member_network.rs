//! A pod member that brings a network of its own: a container joining a running VM whose
//! spec names a network namespace other than its pod's (a podman pod that does not share
//! its network, `podman pod create --share ipc,uts`). Its interfaces are carried like the
//! pod's, but into the running VM: a tap beside each, a NIC hot-added for each tap, and a
//! namespace of its own in the guest that the agent moves those NICs into. It all goes
//! with the container.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use slog::{info, warn, Logger};
use thiserror::Error;
use ward_agent_protocol::GUEST_NETNS_DIR;

use super::store::SandboxState;
use super::{Agent, AgentError, Sandbox, SandboxError};
use crate::network::{self, Mode, NetworkError, NetworkRecord};

#[derive(Debug, Error)]
pub enum MemberNetworkError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("hot-adding the network card for {interface}: {source}")]
    Plug {
        interface: String,
        source: SandboxError,
    },
    #[error("configuring its network in the guest: {0}")]
    Guest(#[source] AgentError),
    #[error("recording the sandbox: {0}")]
    Record(String),
}

/// What one member brought, kept until it leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNetwork {
    /// The host namespace and the interfaces whose ingress ward took over.
    pub record: NetworkRecord,
    /// The IDs of the NICs hot-added for it.
    pub nics: Vec<String>,
    /// The name of its namespace in the guest (under [`GUEST_NETNS_DIR`]).
    pub guest_namespace: String,
}

/// The host namespace a member's network of its own lives in, or None when it has none
/// to bring: it names the pod's namespace (or the sandbox container's process's, which
/// CRI members name through `/proc/<pid>/ns/net`), or the host's (which for a member means
/// its pod's), or asks for a new one (which the guest gives it).
pub fn own_namespace(mode: &Mode, pod: &SandboxState, sandbox_pid: Option<i32>) -> Option<PathBuf> {
    let Mode::Namespace(path) = mode else {
        return None;
    };
    let pods = pod
        .network
        .as_ref()
        .is_some_and(|n| network::same_namespace(path, &n.netns));
    let sandbox_process = sandbox_pid.is_some_and(|pid| {
        network::same_namespace(path, &PathBuf::from(format!("/proc/{pid}/ns/net")))
    });
    (!pods && !sandbox_process).then(|| path.clone())
}

/// The path a member's spec names for its network in the guest.
pub fn guest_path(guest_namespace: &str) -> PathBuf {
    Path::new(GUEST_NETNS_DIR).join(guest_namespace)
}

/// Carries `netns` into the running VM for member `id` and returns its guest namespace's
/// path. Recorded in `pod` (through `save`) before anything is plugged, so that [`leave`]
/// undoes whatever a failure leaves.
pub fn join(
    sandbox: &Sandbox,
    agent: &Agent,
    pod: &mut SandboxState,
    mut save: impl FnMut(&SandboxState) -> Result<(), String>,
    id: &str,
    netns: &Path,
    log: &Logger,
) -> Result<PathBuf, MemberNetworkError> {
    let started = std::time::Instant::now();
    let carried = network::carry(netns)?;
    let guest = network::GuestNetwork::of(&carried);
    pod.serial += 1;
    let guest_namespace = format!("member{}", pod.serial);
    let mut nics = Vec::new();
    for _ in &carried.taps {
        pod.serial += 1;
        nics.push(format!("nic{}", pod.serial));
    }
    pod.member_networks.insert(
        id.to_string(),
        MemberNetwork {
            record: carried.record(),
            nics: nics.clone(),
            guest_namespace: guest_namespace.clone(),
        },
    );
    save(pod).map_err(MemberNetworkError::Record)?;
    let names: Vec<String> = carried
        .taps
        .iter()
        .map(|t| t.carries.name.clone())
        .collect();
    for ((nic, nic_id), name) in carried.into_nics().iter().zip(&nics).zip(&names) {
        sandbox
            .add_nic(nic_id, nic)
            .map_err(|source| MemberNetworkError::Plug {
                interface: name.clone(),
                source,
            })?;
    }
    // Even with no interface (its namespace has only lo), the member gets a namespace of
    // its own: it must not see the pod's.
    agent
        .setup_network(&guest.interfaces, &guest.routes, &guest_namespace)
        .map_err(MemberNetworkError::Guest)?;
    info!(log, "the member's own network carried into the VM"; "container" => id,
          "interfaces" => guest.describe(), "guest_namespace" => &guest_namespace,
          "ms" => started.elapsed().as_millis() as u64);
    Ok(guest_path(&guest_namespace))
}

/// Takes member `id`'s own network out of the VM (when `running` holds the VM and its
/// agent) and gives its host interfaces their ingress back. Never fails: what cannot be
/// undone is logged.
pub fn leave(running: Option<(&Sandbox, &Agent)>, pod: &mut SandboxState, id: &str, log: &Logger) {
    let Some(member) = pod.member_networks.remove(id) else {
        return;
    };
    if let Some((sandbox, agent)) = running {
        // Its processes are gone: the namespace goes, and its NICs fall back to the
        // guest's own, from where they are unplugged.
        if let Err(e) = agent.remove_network(&member.guest_namespace) {
            warn!(log, "removing the member's guest namespace"; "error" => e.to_string());
        }
        for nic in &member.nics {
            if let Err(e) = sandbox.remove_nic(nic) {
                warn!(log, "removing the member's network card"; "nic" => nic, "error" => e.to_string());
            }
        }
    }
    if let Err(e) = network::release(&member.record) {
        warn!(log, "releasing the member's network"; "error" => e.to_string());
    }
}

/// Gives every member's host interfaces their ingress back, the VM being gone.
pub fn release_all(pod: &mut SandboxState, log: &Logger) {
    let ids: Vec<String> = pod.member_networks.keys().cloned().collect();
    for id in ids {
        leave(None, pod, &id, log);
    }
}
