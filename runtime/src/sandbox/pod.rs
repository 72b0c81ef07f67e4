//! Which sandbox a container belongs to, read from the annotations engines put in its spec.
//!
//! Kubernetes (through containerd's CRI) marks its pause container `sandbox` and every
//! other container of the pod `container` with the pause container's ID; CRI-O uses its
//! own names, and podman writes CRI-O's names for the containers of a pod (and none for
//! the pod's infra container). A container marked as a pod's member joins the VM of the
//! pod's sandbox; any other container is a sandbox of its own.

use std::collections::HashMap;

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

/// (container type, sandbox ID) annotation pairs, by engine.
const POD_ANNOTATIONS: [(&str, &str); 2] = [
    // containerd's CRI plugin
    (
        "io.kubernetes.cri.container-type",
        "io.kubernetes.cri.sandbox-id",
    ),
    // CRI-O, and podman's pods
    (
        "io.kubernetes.cri-o.ContainerType",
        "io.kubernetes.cri-o.SandboxID",
    ),
];

/// The container type of a pod's members.
const MEMBER_TYPE: &str = "container";
/// The container type of a pod's sandbox (pause) container.
const SANDBOX_TYPE: &str = "sandbox";

/// Whether the container is a pod's sandbox, which other containers will join: its VM
/// then boots with room to grow for them (their vCPUs, memory, disks and NICs).
pub fn expects_members(annotations: &HashMap<String, String>, cgroups_path: Option<&str>) -> bool {
    POD_ANNOTATIONS
        .iter()
        .any(|(type_key, _)| annotations.get(*type_key).map(String::as_str) == Some(SANDBOX_TYPE))
        || is_podman_infra(annotations, cgroups_path)
}

/// podman marks its pods' members but not their infra container. That one is told by its
/// cgroup, which podman puts in its pod's: `/libpod_parent/<pod>/libpod-<id>` (cgroupfs)
/// or `machine-libpod_pod_<pod>.slice:libpod:<id>` (systemd), where a container outside
/// any pod gets `/libpod_parent/libpod-<id>` or `machine.slice:libpod:<id>`.
fn is_podman_infra(annotations: &HashMap<String, String>, cgroups_path: Option<&str>) -> bool {
    let libpod = annotations.get("io.container.manager").map(String::as_str) == Some("libpod");
    let typed = POD_ANNOTATIONS
        .iter()
        .any(|(type_key, _)| annotations.contains_key(*type_key));
    let Some(path) = cgroups_path.filter(|_| libpod && !typed) else {
        return false;
    };
    if let Some(rest) = path.strip_prefix("/libpod_parent/") {
        let parts: Vec<&str> = rest.split('/').collect();
        return parts.len() == 2 && !parts[0].starts_with("libpod-") && !parts[0].is_empty();
    }
    path.split(':')
        .next()
        .is_some_and(|slice| slice.contains("libpod_pod_"))
}

/// Where a container lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// It is a sandbox: a new VM, whose ID is the container's.
    Own,
    /// It joins the running sandbox of this ID.
    Join(String),
}

impl Placement {
    /// The placement of container `id` by its spec's annotations.
    pub fn of(id: &str, annotations: &HashMap<String, String>) -> Placement {
        for (type_key, sandbox_key) in POD_ANNOTATIONS {
            let Some(typ) = annotations.get(type_key) else {
                continue;
            };
            if typ != MEMBER_TYPE {
                return Placement::Own;
            }
            return match annotations.get(sandbox_key) {
                Some(sandbox) if !sandbox.is_empty() && sandbox != id => {
                    Placement::Join(sandbox.clone())
                }
                _ => Placement::Own,
            };
        }
        Placement::Own
    }

    /// The ID of the sandbox this container lives in.
    pub fn sandbox_id<'a>(&'a self, id: &'a str) -> &'a str {
        match self {
            Placement::Own => id,
            Placement::Join(sandbox) => sandbox,
        }
    }
}

/// The namespaces a pod member shares with its sandbox container: those its spec names by
/// a host path among the types a pod shares. Engines point them at the infra container's
/// (`/proc/<infra>/ns/net`) or at the pod's (`/run/netns/...`); in the guest both mean
/// the sandbox container's.
pub fn shared_namespaces(namespaces: &[LinuxNamespace]) -> Vec<String> {
    namespaces
        .iter()
        .filter(|ns| ns.path().is_some())
        .filter_map(|ns| match ns.typ() {
            LinuxNamespaceType::Network => Some("network"),
            LinuxNamespaceType::Ipc => Some("ipc"),
            LinuxNamespaceType::Uts => Some("uts"),
            LinuxNamespaceType::Pid => Some("pid"),
            _ => None,
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cri_sandbox_and_member() {
        let sandbox = annotations(&[
            ("io.kubernetes.cri.container-type", "sandbox"),
            ("io.kubernetes.cri.sandbox-id", "p1"),
        ]);
        assert_eq!(Placement::of("p1", &sandbox), Placement::Own);
        let member = annotations(&[
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.sandbox-id", "p1"),
        ]);
        assert_eq!(Placement::of("c1", &member), Placement::Join("p1".into()));
        assert_eq!(Placement::of("c1", &member).sandbox_id("c1"), "p1");
    }

    #[test]
    fn only_a_pods_sandbox_expects_members() {
        let sandbox = annotations(&[("io.kubernetes.cri.container-type", "sandbox")]);
        assert!(expects_members(&sandbox, None));
        let member = annotations(&[("io.kubernetes.cri-o.ContainerType", "container")]);
        assert!(!expects_members(&member, None));
        assert!(!expects_members(&HashMap::new(), None));
    }

    #[test]
    fn a_podman_pods_infra_container_is_told_by_its_cgroup() {
        let libpod = annotations(&[("io.container.manager", "libpod")]);
        let pod = "528c61e1c5a585f2a8252c5ac1e9c8575859b1c633cbd905e9adf20988b9e54a";
        let infra = format!("/libpod_parent/{pod}/libpod-532d21e688db");
        assert!(expects_members(&libpod, Some(&infra)));
        let systemd = format!("machine-libpod_pod_{pod}.slice:libpod:532d21e688db");
        assert!(expects_members(&libpod, Some(&systemd)));
        // Containers outside pods.
        assert!(!expects_members(
            &libpod,
            Some("/libpod_parent/libpod-532d21e688db")
        ));
        assert!(!expects_members(
            &libpod,
            Some("machine.slice:libpod:532d21e688db")
        ));
        assert!(!expects_members(&libpod, None));
        // Not podman's, or a member (it is typed).
        assert!(!expects_members(&HashMap::new(), Some(&infra)));
        let mut member = libpod.clone();
        member.insert(
            "io.kubernetes.cri-o.ContainerType".into(),
            "container".into(),
        );
        assert!(!expects_members(&member, Some(&infra)));
    }

    #[test]
    fn podman_pod_member_and_infra() {
        // As podman 4.3 writes them (tests/contracts): the infra container has no type.
        let infra = annotations(&[("io.kubernetes.cri-o.TTY", "false")]);
        assert_eq!(Placement::of("infra", &infra), Placement::Own);
        let member = annotations(&[
            ("io.kubernetes.cri-o.ContainerType", "container"),
            ("io.kubernetes.cri-o.SandboxID", "infra"),
        ]);
        assert_eq!(Placement::of("c", &member), Placement::Join("infra".into()));
    }

    #[test]
    fn a_member_without_a_sandbox_id_or_naming_itself_is_its_own_sandbox() {
        let no_id = annotations(&[("io.kubernetes.cri.container-type", "container")]);
        assert_eq!(Placement::of("c", &no_id), Placement::Own);
        let itself = annotations(&[
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.sandbox-id", "c"),
        ]);
        assert_eq!(Placement::of("c", &itself), Placement::Own);
    }

    #[test]
    fn only_namespaces_given_by_path_and_of_pod_types_are_shared() {
        let namespaces: Vec<LinuxNamespace> = serde_json::from_value(serde_json::json!([
            {"type": "pid"},
            {"type": "network", "path": "/proc/7/ns/net"},
            {"type": "ipc", "path": "/proc/7/ns/ipc"},
            {"type": "uts", "path": "/proc/7/ns/uts"},
            {"type": "mount"},
            {"type": "cgroup", "path": "/proc/7/ns/cgroup"},
        ]))
        .unwrap();
        assert_eq!(shared_namespaces(&namespaces), ["network", "ipc", "uts"]);
    }
}
