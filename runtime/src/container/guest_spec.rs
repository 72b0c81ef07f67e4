//! The host's OCI spec, made true inside the guest.
//!
//! Engines write config.json for a runtime that shares the host's kernel: bind mounts of
//! host files (/etc/hosts, /etc/resolv.conf, volumes), namespaces to join by a host path
//! (podman's network namespace under /run/netns), a host tmpfs for /dev/shm. None of those
//! exist in the guest. This module rewrites the spec for the guest and lists the host
//! paths the sandbox must share so the rewritten mounts find them.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hooks, LinuxNamespace, Mount, MountBuilder, Spec};
use thiserror::Error;

/// Host bind sources that the guest has too: device nodes and sysfs are the guest's own
/// (the host's /sys describes the host's hardware, none of a VM's business).
const GUEST_OWNED_PREFIXES: [&str; 2] = ["/dev", "/sys"];

#[derive(Debug, Error)]
pub enum GuestSpecError {
    #[error("bind mount source {source_path} (for {destination}) does not exist")]
    MissingSource {
        source_path: PathBuf,
        destination: PathBuf,
    },
    #[error("bind mount for {destination} has no source")]
    NoSource { destination: PathBuf },
    #[error("building the mount for {destination}: {message}")]
    Build {
        destination: PathBuf,
        message: String,
    },
}

/// One host path the guest reaches through the sandbox's shared directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    /// Host path (file or directory).
    pub source: PathBuf,
    /// Its entry name in the shared directory.
    pub name: String,
    pub is_dir: bool,
    pub read_only: bool,
    /// `rbind`: submounts of the source come along.
    pub recursive: bool,
}

/// What `translate` did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adjustments {
    /// Namespaces that named a host path and get a new guest namespace instead.
    pub unjoined_namespaces: Vec<String>,
    /// Namespaces that named a host path and, the container being a pod's member, join
    /// the pod's sandbox container's in the guest ("network", "ipc", "uts", "pid").
    pub pod_namespaces: Vec<String>,
    /// Destinations whose host tmpfs became a guest tmpfs.
    pub guest_tmpfs: Vec<PathBuf>,
}

/// The spec for the guest, the host paths it needs shared, and what changed.
#[derive(Debug)]
pub struct GuestSpec {
    pub spec: Spec,
    pub binds: Vec<HostBind>,
    pub adjustments: Adjustments,
}

/// The container stays in the guest's own network namespace, where the pod's NICs are
/// (see `network`), instead of getting an empty one.
pub fn share_guest_network(guest: &mut GuestSpec) {
    if let Some(linux) = guest.spec.linux_mut() {
        if let Some(namespaces) = linux.namespaces().clone() {
            let kept = namespaces
                .into_iter()
                .filter(|ns| ns.typ() != oci_spec::runtime::LinuxNamespaceType::Network)
                .collect();
            linux.set_namespaces(Some(kept));
        }
    }
    guest
        .adjustments
        .unjoined_namespaces
        .retain(|name| name != "network");
}

/// The container (a pod member that brought its own network) gets the guest namespace
/// the agent made for it at `path`, not its pod's.
pub fn own_guest_network(guest: &mut GuestSpec, path: &std::path::Path) {
    if let Some(linux) = guest.spec.linux_mut() {
        if let Some(namespaces) = linux.namespaces().clone() {
            let kept = namespaces
                .into_iter()
                .map(|mut ns| {
                    if ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
                        ns.set_path(Some(path.to_path_buf()));
                    }
                    ns
                })
                .collect();
            linux.set_namespaces(Some(kept));
        }
    }
    let adjustments = &mut guest.adjustments;
    adjustments.unjoined_namespaces.retain(|n| n != "network");
    adjustments.pod_namespaces.retain(|n| n != "network");
}

fn is_bind(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind")
        || mount
            .options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

fn has_option(mount: &Mount, name: &str) -> bool {
    mount
        .options()
        .as_ref()
        .is_some_and(|o| o.iter().any(|o| o == name))
}

fn guest_owned(source: &Path) -> bool {
    GUEST_OWNED_PREFIXES
        .iter()
        .any(|prefix| source.starts_with(prefix))
}

/// /dev/shm shared with the host would be a slow 9p file system where programs expect
/// memory; every other destination keeps the host's data.
fn wants_guest_tmpfs(mount: &Mount) -> bool {
    mount.destination() == Path::new("/dev/shm")
}

/// A guest tmpfs standing in for a host bind at `mount`'s destination, keeping the
/// options that mean something for a tmpfs.
fn guest_tmpfs(mount: &Mount) -> Result<Mount, GuestSpecError> {
    let mut options: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
    options.push("mode=1777".into());
    if let Some(size) = mount
        .options()
        .as_ref()
        .and_then(|o| o.iter().find(|o| o.starts_with("size=")))
    {
        options.push(size.clone());
    }
    if has_option(mount, "ro") {
        options.push("ro".into());
    }
    MountBuilder::default()
        .destination(mount.destination().clone())
        .typ("tmpfs")
        .source("shm")
        .options(options)
        .build()
        .map_err(|e| GuestSpecError::Build {
            destination: mount.destination().clone(),
            message: e.to_string(),
        })
}

/// Rewrites `spec` for a guest that sees the shared directory at `guest_shared_dir`.
/// `exists` answers whether a host path exists and is a directory (`Some(is_dir)`).
/// A pod's member (`pod_member`) joins its sandbox container's namespaces where its spec
/// names a host namespace of a type pods share.
pub fn translate(
    spec: &Spec,
    guest_shared_dir: &Path,
    pod_member: bool,
    exists: impl Fn(&Path) -> Option<bool>,
) -> Result<GuestSpec, GuestSpecError> {
    let mut spec = spec.clone();
    let mut binds = Vec::new();
    let mut adjustments = Adjustments::default();
    if pod_member {
        let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().clone());
        adjustments.pod_namespaces =
            crate::sandbox::pod::shared_namespaces(namespaces.as_deref().unwrap_or(&[]));
    }

    if let Some(mounts) = spec.mounts().clone() {
        let mut rewritten = Vec::with_capacity(mounts.len());
        for mount in mounts {
            if !is_bind(&mount) {
                rewritten.push(mount);
                continue;
            }
            if wants_guest_tmpfs(&mount) {
                adjustments.guest_tmpfs.push(mount.destination().clone());
                rewritten.push(guest_tmpfs(&mount)?);
                continue;
            }
            let source = mount
                .source()
                .clone()
                .ok_or_else(|| GuestSpecError::NoSource {
                    destination: mount.destination().clone(),
                })?;
            if guest_owned(&source) {
                rewritten.push(mount);
                continue;
            }
            let is_dir = exists(&source).ok_or_else(|| GuestSpecError::MissingSource {
                source_path: source.clone(),
                destination: mount.destination().clone(),
            })?;
            let name = binds.len().to_string();
            binds.push(HostBind {
                source,
                name: name.clone(),
                is_dir,
                read_only: has_option(&mount, "ro"),
                recursive: has_option(&mount, "rbind"),
            });
            let mut mount = mount;
            mount.set_source(Some(guest_shared_dir.join(&name)));
            rewritten.push(mount);
        }
        spec.set_mounts(Some(rewritten));
    }

    // The host runs the hooks of the runtime's namespace; only those of the container's
    // namespaces concern the guest.
    if let Some(hooks) = spec.hooks().clone() {
        let mut guest_hooks = Hooks::default();
        guest_hooks.set_create_container(hooks.create_container().clone());
        guest_hooks.set_start_container(hooks.start_container().clone());
        let any =
            guest_hooks.create_container().is_some() || guest_hooks.start_container().is_some();
        spec.set_hooks(any.then_some(guest_hooks));
    }

    if let Some(linux) = spec.linux_mut() {
        if let Some(namespaces) = linux.namespaces().clone() {
            let unjoined: Vec<LinuxNamespace> = namespaces
                .into_iter()
                .map(|mut ns| {
                    if ns.path().is_some() {
                        let name = format!("{:?}", ns.typ()).to_lowercase();
                        if !adjustments.pod_namespaces.contains(&name) {
                            adjustments.unjoined_namespaces.push(name);
                        }
                        ns.set_path(None);
                    }
                    ns
                })
                .collect();
            linux.set_namespaces(Some(unjoined));
        }
    }
    Ok(GuestSpec {
        spec,
        binds,
        adjustments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(mounts: serde_json::Value, namespaces: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
            "mounts": mounts,
            "linux": {"namespaces": namespaces},
        }))
        .unwrap()
    }

    fn host(path: &Path) -> Option<bool> {
        match path.to_str() {
            Some("/var/lib/c/userdata/hosts") => Some(false),
            Some("/srv/data") => Some(true),
            _ => None,
        }
    }

    #[test]
    fn host_binds_move_to_the_shared_directory() {
        let spec = spec_with(
            serde_json::json!([
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/c/userdata/hosts", "options": ["bind", "rprivate"]},
                {"destination": "/data", "source": "/srv/data", "options": ["rbind", "ro"]},
                {"destination": "/dev/fuse", "type": "bind", "source": "/dev/fuse", "options": ["bind"]},
                {"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "ro"]},
            ]),
            serde_json::json!([{"type": "mount"}]),
        );
        let out = translate(&spec, Path::new("/run/ward/shared"), false, host).unwrap();
        let mounts = out.spec.mounts().clone().unwrap();
        assert_eq!(mounts[0].source().as_deref(), Some(Path::new("proc")));
        assert_eq!(
            mounts[1].source().as_deref(),
            Some(Path::new("/run/ward/shared/0"))
        );
        assert_eq!(
            mounts[2].source().as_deref(),
            Some(Path::new("/run/ward/shared/1"))
        );
        assert_eq!(
            mounts[3].source().as_deref(),
            Some(Path::new("/dev/fuse")),
            "device binds stay the guest's"
        );
        assert_eq!(
            mounts[4].source().as_deref(),
            Some(Path::new("/sys")),
            "so does sysfs"
        );
        assert_eq!(
            out.binds,
            vec![
                HostBind {
                    source: "/var/lib/c/userdata/hosts".into(),
                    name: "0".into(),
                    is_dir: false,
                    read_only: false,
                    recursive: false
                },
                HostBind {
                    source: "/srv/data".into(),
                    name: "1".into(),
                    is_dir: true,
                    read_only: true,
                    recursive: true
                },
            ]
        );
    }

    #[test]
    fn a_missing_bind_source_is_named() {
        let spec = spec_with(
            serde_json::json!([{"destination": "/x", "type": "bind", "source": "/nope", "options": ["bind"]}]),
            serde_json::json!([]),
        );
        let err = translate(&spec, Path::new("/s"), false, host).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bind mount source /nope (for /x) does not exist"
        );
    }

    #[test]
    fn dev_shm_becomes_a_guest_tmpfs() {
        let spec = spec_with(
            serde_json::json!([{"destination": "/dev/shm", "type": "bind", "source": "/var/lib/c/userdata/shm", "options": ["bind", "private", "size=65536k"]}]),
            serde_json::json!([]),
        );
        let out = translate(&spec, Path::new("/s"), false, host).unwrap();
        let mount = &out.spec.mounts().clone().unwrap()[0];
        assert_eq!(mount.typ().as_deref(), Some("tmpfs"));
        assert!(mount
            .options()
            .as_ref()
            .unwrap()
            .contains(&"size=65536k".to_string()));
        assert!(out.binds.is_empty());
        assert_eq!(out.adjustments.guest_tmpfs, vec![PathBuf::from("/dev/shm")]);
    }

    #[test]
    fn host_namespace_paths_become_new_guest_namespaces() {
        let spec = spec_with(
            serde_json::json!([]),
            serde_json::json!([{"type": "pid"}, {"type": "network", "path": "/run/netns/netns-1"}]),
        );
        let out = translate(&spec, Path::new("/s"), false, host).unwrap();
        let namespaces = out
            .spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap();
        assert!(namespaces.iter().all(|ns| ns.path().is_none()));
        assert_eq!(out.adjustments.unjoined_namespaces, vec!["network"]);
    }

    #[test]
    fn a_carried_network_is_the_guests_own() {
        let spec = spec_with(
            serde_json::json!([]),
            serde_json::json!([{"type": "pid"}, {"type": "network", "path": "/run/netns/netns-1"}]),
        );
        let mut out = translate(&spec, Path::new("/g"), false, |_| Some(true)).unwrap();
        share_guest_network(&mut out);
        let namespaces = out
            .spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap();
        assert_eq!(namespaces.len(), 1);
        assert_eq!(
            namespaces[0].typ(),
            oci_spec::runtime::LinuxNamespaceType::Pid
        );
        assert!(out.adjustments.unjoined_namespaces.is_empty());
    }

    #[test]
    fn a_pod_member_joins_the_pods_namespaces_instead() {
        let spec = spec_with(
            serde_json::json!([]),
            serde_json::json!([
                {"type": "pid"},
                {"type": "network", "path": "/proc/7/ns/net"},
                {"type": "uts", "path": "/proc/7/ns/uts"},
                {"type": "user", "path": "/proc/7/ns/user"},
            ]),
        );
        let out = translate(&spec, Path::new("/s"), true, host).unwrap();
        assert_eq!(out.adjustments.pod_namespaces, vec!["network", "uts"]);
        assert_eq!(out.adjustments.unjoined_namespaces, vec!["user"]);
    }

    #[test]
    fn only_the_container_namespace_hooks_reach_the_guest() {
        let mut spec = spec_with(serde_json::json!([]), serde_json::json!([]));
        let hooks: Hooks = serde_json::from_value(serde_json::json!({
            "prestart": [{"path": "/bin/a"}], "poststop": [{"path": "/bin/b"}]
        }))
        .unwrap();
        spec.set_hooks(Some(hooks));
        assert!(translate(&spec, Path::new("/s"), false, host)
            .unwrap()
            .spec
            .hooks()
            .is_none());
        let hooks: Hooks = serde_json::from_value(serde_json::json!({
            "prestart": [{"path": "/bin/a"}], "startContainer": [{"path": "/bin/c"}]
        }))
        .unwrap();
        spec.set_hooks(Some(hooks));
        let guest = translate(&spec, Path::new("/s"), false, host).unwrap().spec;
        let guest_hooks = guest.hooks().clone().unwrap();
        assert!(guest_hooks.prestart().is_none());
        assert_eq!(guest_hooks.start_container().as_ref().unwrap().len(), 1);
    }
}
