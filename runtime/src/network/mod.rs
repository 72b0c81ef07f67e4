//! The pod's network, carried from its host network namespace into the VM.
//!
//! Engines (podman's netavark, CNI under containerd's CRI) give a pod a network namespace
//! holding a veth and name it in the spec. A VM cannot join a namespace, so for each such
//! interface ward makes a tap in the same namespace and has tc move every frame between
//! the two: whatever reaches the veth leaves through the tap into the guest, and what the
//! guest sends leaves through the veth. The guest's NIC gets the veth's MAC and MTU, and
//! the agent gives it the veth's addresses and the namespace's routes, so the engine's
//! port mappings, bridge and DNS work unchanged. (Kata's tc-filter model.)
//!
//! - `holder`: a process holding a new namespace while an engine's prestart hooks (docker)
//!   attach it to a bridge, before the VM boots;
//! - `netns`: doing netlink work inside a namespace, bounded in time;
//! - `scan`: what the namespace holds (interfaces, addresses, routes);
//! - `tap`: opening a tap device;
//! - `redirect`: the tc ingress qdiscs and mirred filters between a veth and its tap.

pub mod holder;
pub mod netns;
pub mod redirect;
pub mod scan;
pub mod tap;

use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetworkError {
    #[error("network namespace {path}: {source}")]
    Namespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink in network namespace {path}: {what}: {message}")]
    Netlink {
        path: PathBuf,
        what: String,
        message: String,
    },
    #[error("network namespace {path}: {what} did not finish within {secs} s")]
    Timeout {
        path: PathBuf,
        what: &'static str,
        secs: u64,
    },
    #[error("cannot make tap {name} in network namespace {path}: {source}")]
    Tap {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "network namespace {path} has {count} interfaces to carry; ward carries at most {max}"
    )]
    TooManyInterfaces {
        path: PathBuf,
        count: usize,
        max: usize,
    },
}

/// An address with its prefix length, as `ip addr` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpNet {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// One interface the engine put in the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub addresses: Vec<IpNet>,
}

/// A route of the namespace's main table that the guest must have too (those the kernel
/// derives from an address come back by themselves when the guest adds the address).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// None: the default route.
    pub destination: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    /// The interface's name.
    pub device: String,
    pub source: Option<IpAddr>,
}

/// What a namespace holds that the guest must reproduce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
}

/// A tap made beside an interface, its fd for the VMM.
#[derive(Debug)]
pub struct Tap {
    pub name: String,
    pub fd: OwnedFd,
    /// The interface it stands for in the guest (MAC, MTU).
    pub carries: Interface,
}

/// A namespace's network, ready for a VM: its taps and what the guest must configure.
#[derive(Debug)]
pub struct Carried {
    pub netns: PathBuf,
    pub taps: Vec<Tap>,
    pub routes: Vec<Route>,
}

/// What teardown needs: the namespace and the interfaces whose ingress ward took over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub netns: PathBuf,
    pub interfaces: Vec<String>,
}

impl Carried {
    pub fn record(&self) -> NetworkRecord {
        NetworkRecord {
            netns: self.netns.clone(),
            interfaces: self.taps.iter().map(|t| t.carries.name.clone()).collect(),
        }
    }
}

/// The most interfaces one sandbox carries (each is a NIC in the guest).
pub const MAX_INTERFACES: usize = 4;

/// Makes a tap for every interface of `netns` (but loopback) and redirects each
/// interface to its tap. An empty result (`--network none`: only `lo`) carries nothing.
pub fn carry(netns: &Path) -> Result<Carried, NetworkError> {
    let path = netns.to_path_buf();
    netns::within(netns, "carrying the interfaces", move |handle| async move {
        let snapshot = scan::snapshot(&handle, &path).await?;
        if snapshot.interfaces.len() > MAX_INTERFACES {
            return Err(NetworkError::TooManyInterfaces {
                path,
                count: snapshot.interfaces.len(),
                max: MAX_INTERFACES,
            });
        }
        let mut taps = Vec::new();
        for (n, interface) in snapshot.interfaces.iter().enumerate() {
            let name = tap::name(n);
            let fd = tap::open(&name).map_err(|source| NetworkError::Tap {
                name: name.clone(),
                path: path.clone(),
                source,
            })?;
            redirect::connect(&handle, &path, interface, &name).await?;
            taps.push(Tap {
                name,
                fd,
                carries: interface.clone(),
            });
        }
        Ok(Carried {
            netns: path,
            taps,
            routes: snapshot.routes,
        })
    })
}

/// Gives the interfaces back their own ingress (the taps went with the VM). A namespace
/// that is gone already (the engine removed it) leaves nothing to undo.
pub fn release(record: &NetworkRecord) -> Result<(), NetworkError> {
    if !record.netns.exists() {
        return Ok(());
    }
    let path = record.netns.clone();
    let names = record.interfaces.clone();
    netns::within(
        &record.netns,
        "releasing the interfaces",
        move |handle| async move {
            for name in &names {
                redirect::disconnect(&handle, &path, name).await?;
            }
            Ok(())
        },
    )
}

/// Where a container's network comes from, by its spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// No network namespace at all: the host's own stack, which a VM cannot share.
    Host,
    /// A new namespace (no path): only loopback, in the guest.
    Fresh,
    /// The engine's namespace, whose interfaces are carried into the VM.
    Namespace(PathBuf),
}

/// The mode of `spec`'s network; a path naming the host's own namespace (ward's) is the
/// host's stack too: carrying it would hand the host's interfaces to the guest.
pub fn mode(spec: &oci_spec::runtime::Spec) -> Mode {
    match named_mode(spec) {
        Mode::Namespace(path) if same_namespace(&path, Path::new("/proc/self/ns/net")) => {
            Mode::Host
        }
        other => other,
    }
}

/// Whether two nsfs paths are the same namespace (same device and inode).
pub fn same_namespace(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn named_mode(spec: &oci_spec::runtime::Spec) -> Mode {
    let network = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|n| {
            n.iter()
                .find(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        });
    match network {
        None => Mode::Host,
        Some(ns) => match ns.path() {
            Some(path) => Mode::Namespace(path.clone()),
            None => Mode::Fresh,
        },
    }
}

/// What the guest configures for a carried network (SetupNetwork).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestNetwork {
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
}

impl GuestNetwork {
    pub fn of(carried: &Carried) -> GuestNetwork {
        GuestNetwork {
            interfaces: carried.taps.iter().map(|t| t.carries.clone()).collect(),
            routes: carried.routes.clone(),
        }
    }

    /// `eth0 0a:58:0a:58:00:02 10.88.0.2/16` per interface, for the log.
    pub fn describe(&self) -> String {
        self.interfaces
            .iter()
            .map(|i| {
                let addresses: Vec<String> = i.addresses.iter().map(|a| a.to_string()).collect();
                format!(
                    "{} {} {}",
                    i.name,
                    ward_hypervisor::format_mac(&i.mac),
                    addresses.join(",")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Carried {
    /// The VM's network cards, each holding its tap.
    pub fn into_nics(self) -> Vec<ward_hypervisor::Nic> {
        self.taps
            .into_iter()
            .map(|tap| ward_hypervisor::Nic {
                tap: std::sync::Arc::new(tap.fd),
                mac: tap.carries.mac,
                mtu: tap.carries.mtu,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod mode_tests {
    use super::*;

    fn spec(namespaces: serde_json::Value) -> oci_spec::runtime::Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {"namespaces": namespaces}
        }))
        .unwrap()
    }

    #[test]
    fn the_spec_names_the_network() {
        assert_eq!(
            mode(&spec(serde_json::json!([{"type": "pid"}]))),
            Mode::Host
        );
        assert_eq!(
            mode(&spec(serde_json::json!([{"type": "network"}]))),
            Mode::Fresh
        );
        assert_eq!(
            mode(&spec(
                serde_json::json!([{"type": "network", "path": "/run/netns/p1"}])
            )),
            Mode::Namespace("/run/netns/p1".into())
        );
        // Our own namespace by any of its names is the host's.
        let own = format!("/proc/{}/ns/net", std::process::id());
        assert_eq!(
            mode(&spec(serde_json::json!([{"type": "network", "path": own}]))),
            Mode::Host
        );
    }
}
