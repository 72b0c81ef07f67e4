//! What ward remembers about one container, on disk.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use ward_hypervisor::{ProcessRecord, VmInstance};

/// The lifecycle of a container. `Creating` is ours: it marks a `create` in progress, or one
/// that crashed half-way (which `delete --force` cleans up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Stopped,
    Paused,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Paused => "paused",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub bundle: PathBuf,
    /// Host path of the root filesystem.
    pub rootfs: PathBuf,
    /// RFC 3339.
    pub created: String,
    pub status: Status,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The sandbox (pod) this container lives in: its own ID for a container that is a
    /// sandbox itself. Recorded before the sandbox is touched.
    #[serde(default)]
    pub sandbox: Option<String>,
    /// The microVM of its sandbox, once launched or joined.
    #[serde(default)]
    pub vm: Option<VmInstance>,
    /// The host process standing for the container's init process.
    #[serde(default)]
    pub relay: Option<ProcessRecord>,
    /// The relays of detached `exec` processes.
    #[serde(default)]
    pub exec_relays: Vec<ProcessRecord>,
    /// Set when the init process's exit status is known.
    #[serde(default)]
    pub exit_status: Option<i32>,
    /// The `ward create` or `ward run` building the container: while the status says
    /// creating, a dead creator means the create crashed half-way.
    #[serde(default)]
    pub creator: Option<ProcessRecord>,
    /// The spec's hooks, for the stages still to come (poststart, poststop) after the
    /// bundle may have changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<oci_spec::runtime::Hooks>,
}

impl ContainerState {
    /// What the hooks are told about this container; `pid` is the relay's while it runs.
    pub fn hook_context(&self) -> crate::hooks::HookContext {
        crate::hooks::HookContext {
            id: self.id.clone(),
            pid: self.relay.as_ref().map(|r| r.pid),
            bundle: self.bundle.clone(),
            annotations: self.annotations.clone(),
        }
    }

    /// The host processes standing for this container's processes. The VM's are the
    /// sandbox's: other containers may live in it.
    pub fn relays(&self) -> Vec<&ProcessRecord> {
        self.relay.iter().chain(self.exec_relays.iter()).collect()
    }

    /// The status as it is now, not as last written: a container whose relay or VM died
    /// without recording an exit has stopped all the same.
    pub fn current_status(&self) -> Status {
        match self.status {
            Status::Creating if !self.creator.as_ref().is_some_and(|c| c.is_alive()) => {
                Status::Stopped
            }
            Status::Created | Status::Running | Status::Paused => {
                let relay_alive = self.relay.as_ref().is_some_and(|r| r.is_alive());
                let vm_alive = self
                    .vm
                    .as_ref()
                    .and_then(|vm| vm.processes.first())
                    .is_some_and(|p| p.is_alive());
                if relay_alive && vm_alive && self.exit_status.is_none() {
                    self.status
                } else {
                    Status::Stopped
                }
            }
            other => other,
        }
    }

    /// The OCI state document, with runc's extra fields.
    pub fn oci_state(&self) -> serde_json::Value {
        let status = self.current_status();
        let pid = match status {
            Status::Created | Status::Running | Status::Paused => {
                self.relay.as_ref().map(|r| r.pid).unwrap_or(0)
            }
            _ => 0,
        };
        serde_json::json!({
            "ociVersion": oci_spec::runtime::Spec::default().version(),
            "id": self.id,
            "pid": pid,
            "status": status.as_str(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
            "annotations": self.annotations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: Status) -> ContainerState {
        ContainerState {
            id: "c".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "2026-01-01T00:00:00Z".into(),
            status,
            annotations: HashMap::new(),
            sandbox: None,
            vm: None,
            relay: None,
            exec_relays: Vec::new(),
            exit_status: None,
            creator: None,
            hooks: None,
        }
    }

    #[test]
    fn a_container_without_live_processes_is_stopped() {
        assert_eq!(state(Status::Running).current_status(), Status::Stopped);
        // A create whose process is gone crashed: nothing is being created any more.
        assert_eq!(state(Status::Creating).current_status(), Status::Stopped);
        let mut creating = state(Status::Creating);
        creating.creator = ProcessRecord::of("ward", std::process::id() as i32);
        assert_eq!(creating.current_status(), Status::Creating);
        assert_eq!(state(Status::Stopped).oci_state()["pid"], 0);
    }

    #[test]
    fn oci_state_has_the_fields_engines_read() {
        let doc = state(Status::Stopped).oci_state();
        for key in [
            "ociVersion",
            "id",
            "pid",
            "status",
            "bundle",
            "rootfs",
            "created",
        ] {
            assert!(doc.get(key).is_some(), "{key}");
        }
        assert_eq!(doc["status"], "stopped");
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = state(Status::Created);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ContainerState>(&text).unwrap(), s);
    }
}
