//! Containers of a pod: they join the namespaces their pod shares (network, IPC, UTS, and
//! PID when the pod shares it) from the pod's sandbox container, which made them.
//!
//! On the host those namespaces are named by host paths (/proc/<pid>/ns/net of the infra
//! container, /run/netns/...), which mean nothing in the guest. The runtime sends the
//! types instead, and the sandbox container's init here gives the paths.

use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Spec};

use super::namespaces::proc_name;
use super::plan::PlanError;

/// The namespaces a pod's containers may share with its sandbox container. The mount,
/// user and cgroup namespaces stay each container's own.
fn joinable(name: &str) -> Option<LinuxNamespaceType> {
    match name {
        "network" => Some(LinuxNamespaceType::Network),
        "ipc" => Some(LinuxNamespaceType::Ipc),
        "uts" => Some(LinuxNamespaceType::Uts),
        "pid" => Some(LinuxNamespaceType::Pid),
        _ => None,
    }
}

/// Points each namespace of the types in `names` at the one of the process `sandbox_pid`,
/// adding it to the spec if the spec lacks it.
pub fn join_namespaces(
    spec: &mut Spec,
    sandbox_pid: i32,
    names: &[String],
) -> Result<(), PlanError> {
    let mut types = Vec::with_capacity(names.len());
    for name in names {
        let typ = joinable(name)
            .ok_or_else(|| PlanError::NotJoinable(name.chars().take(32).collect()))?;
        if !types.contains(&typ) {
            types.push(typ);
        }
    }
    let linux = spec.linux_mut().as_mut().ok_or(PlanError::NoLinux)?;
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    for typ in types {
        let path = format!("/proc/{sandbox_pid}/ns/{}", proc_name(typ));
        match namespaces.iter_mut().find(|ns| ns.typ() == typ) {
            Some(ns) => {
                ns.set_path(Some(path.into()));
            }
            None => namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(typ)
                    .path(path)
                    .build()
                    .map_err(|e| PlanError::NotJoinable(e.to_string()))?,
            ),
        }
    }
    linux.set_namespaces(Some(namespaces));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "mount"}, {"type": "network"}, {"type": "pid"}]},
        }))
        .unwrap()
    }

    fn path_of(spec: &Spec, typ: LinuxNamespaceType) -> Option<String> {
        spec.linux()
            .as_ref()?
            .namespaces()
            .as_ref()?
            .iter()
            .find(|n| n.typ() == typ)?
            .path()
            .as_ref()
            .map(|p| p.display().to_string())
    }

    #[test]
    fn shared_namespaces_point_at_the_sandbox_init() {
        let mut s = spec();
        let names = ["network".to_string(), "ipc".to_string(), "uts".to_string()];
        join_namespaces(&mut s, 42, &names).unwrap();
        assert_eq!(
            path_of(&s, LinuxNamespaceType::Network).unwrap(),
            "/proc/42/ns/net"
        );
        assert_eq!(
            path_of(&s, LinuxNamespaceType::Ipc).unwrap(),
            "/proc/42/ns/ipc"
        );
        assert_eq!(
            path_of(&s, LinuxNamespaceType::Uts).unwrap(),
            "/proc/42/ns/uts"
        );
        // Not asked for: stays the container's own.
        assert_eq!(path_of(&s, LinuxNamespaceType::Pid), None);
        assert_eq!(path_of(&s, LinuxNamespaceType::Mount), None);
    }

    #[test]
    fn mount_user_and_unknown_namespaces_are_never_joined() {
        for name in ["mount", "user", "cgroup", "bogus", ""] {
            let err = join_namespaces(&mut spec(), 42, &[name.to_string()]).unwrap_err();
            assert!(matches!(err, PlanError::NotJoinable(_)), "{name}: {err}");
        }
    }
}
