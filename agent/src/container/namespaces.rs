//! The spec's `linux.namespaces` as a plan: which namespaces the container's processes
//! create (unshare) and which existing ones they join (setns by path).
//!
//! Order matters and is fixed here: a user namespace is joined first (it owns the others),
//! then the other joined namespaces, then a new user namespace is made (its ID maps are
//! written by the agent), then the remaining new namespaces in one unshare, PID last in
//! effect because it applies only to the next fork.

use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NamespaceError {
    #[error("the {0} namespace is listed twice in linux.namespaces")]
    Duplicate(String),
    #[error("the path {path:?} of the {ns} namespace is not an absolute path")]
    RelativePath { ns: String, path: PathBuf },
    #[error("the container needs a new mount namespace: add {{\"type\": \"mount\"}} without a path to linux.namespaces")]
    NoMountNamespace,
    #[error("the hostname is set but the container has no new uts namespace")]
    HostnameWithoutUts,
    #[error("uid/gid mappings are given but the container has no new user namespace")]
    MappingsWithoutUserNs,
    #[error("a new user namespace needs uidMappings and gidMappings")]
    UserNsWithoutMappings,
}

/// The clone flag of a namespace type.
pub fn clone_flag(ns: LinuxNamespaceType) -> CloneFlags {
    match ns {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // nix 0.29 has no name for CLONE_NEWTIME.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The name of a namespace under /proc/<pid>/ns/.
pub fn proc_name(ns: LinuxNamespaceType) -> &'static str {
    match ns {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Every namespace type, user first: the order in which an exec joins a container's.
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePlan {
    /// Existing namespaces to setns into, user first.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
    /// A new user namespace (made before the others, with the agent writing its maps).
    pub new_user: bool,
    /// The other new namespaces, in one unshare.
    pub unshare: CloneFlags,
}

impl NamespacePlan {
    pub fn new_pid(&self) -> bool {
        self.unshare.contains(CloneFlags::CLONE_NEWPID)
    }

    pub fn new_net(&self) -> bool {
        self.unshare.contains(CloneFlags::CLONE_NEWNET)
    }

    pub fn new_uts(&self) -> bool {
        self.unshare.contains(CloneFlags::CLONE_NEWUTS)
    }
}

pub fn plan(namespaces: &[LinuxNamespace]) -> Result<NamespacePlan, NamespaceError> {
    let mut seen = Vec::new();
    let mut join = Vec::new();
    let mut new_user = false;
    let mut unshare = CloneFlags::empty();
    for ns in namespaces {
        let typ = ns.typ();
        if seen.contains(&typ) {
            return Err(NamespaceError::Duplicate(proc_name(typ).into()));
        }
        seen.push(typ);
        match ns.path() {
            Some(path) => {
                if !path.is_absolute() {
                    return Err(NamespaceError::RelativePath {
                        ns: proc_name(typ).into(),
                        path: path.clone(),
                    });
                }
                if typ == LinuxNamespaceType::Mount {
                    // The rootfs is built in a mount namespace of the container's own;
                    // joining another one would build it there.
                    return Err(NamespaceError::NoMountNamespace);
                }
                join.push((typ, path.clone()));
            }
            None if typ == LinuxNamespaceType::User => new_user = true,
            None => unshare |= clone_flag(typ),
        }
    }
    if !unshare.contains(CloneFlags::CLONE_NEWNS) {
        return Err(NamespaceError::NoMountNamespace);
    }
    // The user namespace owns the others: join it first.
    join.sort_by_key(|(typ, _)| *typ != LinuxNamespaceType::User);
    Ok(NamespacePlan {
        join,
        new_user,
        unshare,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxNamespaceBuilder;

    fn ns(typ: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut builder = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(p) = path {
            builder = builder.path(p);
        }
        builder.build().unwrap()
    }

    #[test]
    fn new_namespaces_become_clone_flags() {
        let plan = plan(&[
            ns(LinuxNamespaceType::Pid, None),
            ns(LinuxNamespaceType::Network, None),
            ns(LinuxNamespaceType::Ipc, None),
            ns(LinuxNamespaceType::Uts, None),
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Cgroup, None),
        ])
        .unwrap();
        assert_eq!(
            plan.unshare,
            CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWNET
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS
                | CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWCGROUP
        );
        assert!(plan.new_pid() && plan.new_net() && plan.new_uts());
        assert!(!plan.new_user);
        assert!(plan.join.is_empty());
    }

    #[test]
    fn user_namespaces_are_handled_apart_and_joined_first() {
        let plan = plan(&[
            ns(LinuxNamespaceType::Mount, None),
            ns(LinuxNamespaceType::Network, Some("/proc/7/ns/net")),
            ns(LinuxNamespaceType::User, Some("/proc/7/ns/user")),
        ])
        .unwrap();
        assert_eq!(plan.join[0].0, LinuxNamespaceType::User);
        assert_eq!(plan.join[1].0, LinuxNamespaceType::Network);
        assert!(!plan.unshare.contains(CloneFlags::CLONE_NEWUSER));

        let plan = super::plan(&[
            ns(LinuxNamespaceType::User, None),
            ns(LinuxNamespaceType::Mount, None),
        ])
        .unwrap();
        assert!(plan.new_user);
        assert_eq!(plan.unshare, CloneFlags::CLONE_NEWNS);
        assert_eq!(
            clone_flag(LinuxNamespaceType::Time).bits(),
            libc::CLONE_NEWTIME
        );
    }

    #[test]
    fn rejects_what_cannot_be_built() {
        assert_eq!(
            plan(&[ns(LinuxNamespaceType::Pid, None)]),
            Err(NamespaceError::NoMountNamespace)
        );
        assert_eq!(
            plan(&[ns(LinuxNamespaceType::Mount, Some("/proc/1/ns/mnt"))]),
            Err(NamespaceError::NoMountNamespace)
        );
        assert_eq!(
            plan(&[
                ns(LinuxNamespaceType::Mount, None),
                ns(LinuxNamespaceType::Mount, None)
            ]),
            Err(NamespaceError::Duplicate("mnt".into()))
        );
        assert!(matches!(
            plan(&[
                ns(LinuxNamespaceType::Mount, None),
                ns(LinuxNamespaceType::Network, Some("proc/1/ns/net"))
            ]),
            Err(NamespaceError::RelativePath { .. })
        ));
    }
}
