//! Carrying out a [`Plan`] over netlink, on a one-thread tokio runtime, within a
//! deadline: in the agent's network namespace (the guest's own, which the pod's
//! containers share), or in a namespace made for one container, into which its NICs are
//! moved as they are hot-added.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use futures_util::stream::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::plan::{Nic, Plan, Route};
use super::{namespace, NetworkError};

/// How often hot-added NICs are looked for while they are awaited.
const NIC_POLL: Duration = Duration::from_millis(50);

fn failed(what: String) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    move |e| NetworkError::Netlink {
        what,
        message: e.to_string(),
    }
}

/// The builder's error type is not exported; only its Debug text is kept.
fn invalid_route<E: std::fmt::Debug>(route: &Route) -> impl FnOnce(E) -> NetworkError + '_ {
    move |e| NetworkError::Invalid(format!("route {route:?}: {e:?}"))
}

pub fn apply(plan: &Plan, deadline: Duration) -> Result<(), NetworkError> {
    let Some(name) = &plan.namespace else {
        if plan.nics.is_empty() {
            return Ok(());
        }
        return run(deadline, configure(plan));
    };
    let until = Instant::now() + deadline;
    let left = move || until.saturating_duration_since(Instant::now());
    let path = namespace::create(name)?;
    // A retried call finds some NICs moved already.
    let macs: Vec<[u8; 6]> = plan.nics.iter().map(|n| n.mac).collect();
    let moved = namespace::within(&path, move || run(left(), present(macs)))?;
    let missing: Vec<Nic> = plan
        .nics
        .iter()
        .filter(|n| !moved.contains(&n.mac))
        .cloned()
        .collect();
    let target = std::fs::File::open(&path)
        .map_err(|e| NetworkError::Namespace(format!("opening {}: {e}", path.display())))?;
    // The wait names the NIC it is missing at `until`: the runtime's bound comes later.
    run(
        left() + 2 * NIC_POLL,
        move_into(&missing, target.as_raw_fd(), until),
    )?;
    let plan = plan.clone();
    namespace::within(&path, move || {
        run(left(), async move {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(NetworkError::Runtime)?;
            tokio::spawn(connection);
            loopback_up(&handle).await?;
            configure(&plan).await
        })
    })
}

/// Moves every NIC of the container namespace `name` back into the guest's own (the
/// calling thread's), under names the kernel picks (`wardgone0`, …: the container's may
/// be taken there), and returns their MACs: a member leaving, its NICs are to be released
/// and unplugged. A namespace that is gone has none.
pub fn evacuate(name: &str, deadline: Duration) -> Result<Vec<String>, NetworkError> {
    let path = namespace::path_of(name);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let own = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(|e| NetworkError::Namespace(format!("opening the guest's namespace: {e}")))?;
    namespace::within(&path, move || {
        run(deadline, async move {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(NetworkError::Runtime)?;
            tokio::spawn(connection);
            let mut macs = Vec::new();
            for link in links(&handle).await? {
                let Some(mac) = mac_of(&link).filter(|m| m.len() == 6 && m.iter().any(|b| *b != 0))
                else {
                    continue; // lo
                };
                let mac: [u8; 6] = mac.try_into().unwrap_or_default();
                set(
                    &handle,
                    LinkUnspec::new_with_index(link.header.index)
                        .setns_by_fd(own.as_raw_fd())
                        .name("wardgone%d".to_string())
                        .build(),
                    "moving a NIC back to the guest's own namespace",
                )
                .await?;
                macs.push(mac_text(&mac));
            }
            Ok(macs)
        })
    })
}

/// Runs `work` on a one-thread runtime of the calling thread (whose network namespace
/// its netlink sockets are made in), within `deadline`.
fn run<T>(
    deadline: Duration,
    work: impl std::future::Future<Output = Result<T, NetworkError>>,
) -> Result<T, NetworkError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(NetworkError::Runtime)?;
    runtime.block_on(async {
        match tokio::time::timeout(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(NetworkError::Timeout(deadline.as_secs())),
        }
    })
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn mac_of(link: &netlink_packet_route::link::LinkMessage) -> Option<&[u8]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(m.as_slice()),
        _ => None,
    })
}

async fn links(
    handle: &Handle,
) -> Result<Vec<netlink_packet_route::link::LinkMessage>, NetworkError> {
    handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(failed("listing links".into()))
}

/// Which of `macs` the current namespace has a link for.
async fn present(macs: Vec<[u8; 6]>) -> Result<Vec<[u8; 6]>, NetworkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Runtime)?;
    tokio::spawn(connection);
    let links = links(&handle).await?;
    Ok(macs
        .into_iter()
        .filter(|mac| links.iter().any(|l| mac_of(l) == Some(mac.as_slice())))
        .collect())
}

/// Moves the NICs of `nics` from the guest's own namespace into `target` as they
/// appear (the VMM is hot-adding them); the first one still missing at `until` is named.
async fn move_into(nics: &[Nic], target: RawFd, until: Instant) -> Result<(), NetworkError> {
    if nics.is_empty() {
        return Ok(());
    }
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Runtime)?;
    tokio::spawn(connection);
    let mut left: Vec<&Nic> = nics.iter().collect();
    loop {
        let links = links(&handle).await?;
        let mut still = Vec::new();
        for nic in left {
            match links.iter().find(|l| mac_of(l) == Some(nic.mac.as_slice())) {
                Some(link) => {
                    set(
                        &handle,
                        LinkUnspec::new_with_index(link.header.index)
                            .setns_by_fd(target)
                            .build(),
                        &format!("moving the NIC for {} into its namespace", nic.name),
                    )
                    .await?
                }
                None => still.push(nic),
            }
        }
        let Some(first) = still.first() else {
            return Ok(());
        };
        if Instant::now() >= until {
            return Err(NetworkError::NoSuchNic {
                mac: mac_text(&first.mac),
                name: first.name.clone(),
            });
        }
        left = still;
        tokio::time::sleep(NIC_POLL).await;
    }
}

/// A new namespace's loopback starts down.
async fn loopback_up(handle: &Handle) -> Result<(), NetworkError> {
    let mut found = handle.link().get().match_name("lo").execute();
    let lo = found
        .try_next()
        .await
        .map_err(failed("finding lo".into()))?
        .ok_or_else(|| NetworkError::Namespace("the new namespace has no lo".into()))?;
    set(
        handle,
        LinkUnspec::new_with_index(lo.header.index).up().build(),
        "bringing lo up",
    )
    .await
}

async fn configure(plan: &Plan) -> Result<(), NetworkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Runtime)?;
    tokio::spawn(connection);
    let links = links(&handle).await?;
    let mut indices = Vec::new();
    for nic in &plan.nics {
        let index = links
            .iter()
            .find(|l| mac_of(l) == Some(nic.mac.as_slice()))
            .map(|l| l.header.index)
            .ok_or_else(|| NetworkError::NoSuchNic {
                mac: mac_text(&nic.mac),
                name: nic.name.clone(),
            })?;
        indices.push(index);
    }
    // A link is renamed only while down, and through a temporary name first, so that two
    // NICs may trade names (the guest's eth0 becoming the host's eth1 and back).
    for (n, &index) in indices.iter().enumerate() {
        set(
            &handle,
            LinkUnspec::new_with_index(index).down().build(),
            "taking a NIC down",
        )
        .await?;
        set(
            &handle,
            LinkUnspec::new_with_index(index)
                .name(format!("wardnet{n}"))
                .build(),
            "renaming a NIC",
        )
        .await?;
    }
    for (nic, &index) in plan.nics.iter().zip(&indices) {
        configure_nic(&handle, nic, index).await?;
    }
    for route in &plan.routes {
        let Some(index) = plan
            .nics
            .iter()
            .zip(&indices)
            .find(|(n, _)| n.name == route.device)
            .map(|(_, &i)| i)
        else {
            continue; // plan::parse refuses such routes
        };
        add_route(&handle, route, index).await?;
    }
    Ok(())
}

async fn set(
    handle: &Handle,
    message: netlink_packet_route::link::LinkMessage,
    what: &str,
) -> Result<(), NetworkError> {
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(failed(what.to_string()))
}

async fn configure_nic(handle: &Handle, nic: &Nic, index: u32) -> Result<(), NetworkError> {
    set(
        handle,
        LinkUnspec::new_with_index(index)
            .name(nic.name.clone())
            .mtu(nic.mtu)
            .build(),
        &format!("naming {} and setting its MTU", nic.name),
    )
    .await?;
    set(
        handle,
        LinkUnspec::new_with_index(index).up().build(),
        &format!("bringing {} up", nic.name),
    )
    .await?;
    for &(ip, prefix) in &nic.addresses {
        let mut request = handle.address().add(index, ip, prefix).replace();
        if ip.is_ipv6() {
            // The host checked the address already; waiting for DAD would only delay
            // routes that name it.
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request
            .execute()
            .await
            .map_err(failed(format!("adding {ip}/{prefix} to {}", nic.name)))?;
    }
    Ok(())
}

async fn add_route(handle: &Handle, route: &Route, index: u32) -> Result<(), NetworkError> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new();
    let destination = route.destination.unwrap_or(if route.is_ipv6() {
        (IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
    } else {
        (IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0)
    });
    builder = builder
        .destination_prefix(destination.0, destination.1)
        .map_err(invalid_route(route))?;
    match route.gateway {
        Some(gateway) => builder = builder.gateway(gateway).map_err(invalid_route(route))?,
        None => builder = builder.scope(RouteScope::Link),
    }
    if let Some(source) = route.source {
        builder = builder.pref_source(source).map_err(invalid_route(route))?;
    }
    let message = builder.output_interface(index).build();
    handle
        .route()
        .add(message)
        .replace()
        .execute()
        .await
        .map_err(failed(format!("adding route {route:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a private network namespace (this test's thread's own): two NICs that
    /// must trade names, get MTUs, addresses and a default route.
    #[test]
    fn a_plan_configures_nics_found_by_mac() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (it makes a network namespace and links)"
        );
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let macs = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
            runtime.block_on(async {
                let (connection, handle, _) = rtnetlink::new_connection().unwrap();
                tokio::spawn(connection);
                // veths (this host's kernel may lack dummy links); the peers stay down.
                for (name, peer, mac) in [("eth0", "p0", macs[0]), ("eth1", "p1", macs[1])] {
                    handle
                        .link()
                        .add(
                            rtnetlink::LinkVeth::new(name, peer)
                                .address(mac.to_vec())
                                .build(),
                        )
                        .execute()
                        .await
                        .unwrap();
                }
            });
            let nic = |name: &str, mac, mtu, address: &str, prefix| Nic {
                name: name.into(),
                mac,
                mtu,
                addresses: vec![(address.parse().unwrap(), prefix)],
            };
            let plan = Plan {
                // eth0's MAC is to be eth1 and the other way round.
                nics: vec![
                    nic("eth1", macs[0], 1400, "10.77.0.2", 24),
                    nic("eth0", macs[1], 9000, "fd00:77::2", 64),
                ],
                routes: vec![Route {
                    destination: None,
                    gateway: Some("10.77.0.1".parse().unwrap()),
                    device: "eth1".into(),
                    source: None,
                }],
                namespace: None,
            };
            apply(&plan, Duration::from_secs(10)).expect("apply");
            // Twice: a retried call finds everything in place already.
            apply(&plan, Duration::from_secs(10)).expect("apply again");
            runtime.block_on(async {
                let (connection, handle, _) = rtnetlink::new_connection().unwrap();
                tokio::spawn(connection);
                let links: Vec<_> = handle.link().get().execute().try_collect().await.unwrap();
                let find = |mac: [u8; 6]| {
                    let link = links
                        .iter()
                        .find(|l| {
                            l.attributes.iter().any(
                                |a| matches!(a, LinkAttribute::Address(m) if m.as_slice() == mac),
                            )
                        })
                        .unwrap();
                    let name = link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    });
                    let mtu = link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Mtu(m) => Some(*m),
                        _ => None,
                    });
                    (name.unwrap(), mtu.unwrap())
                };
                assert_eq!(find(macs[0]), ("eth1".to_string(), 1400));
                assert_eq!(find(macs[1]), ("eth0".to_string(), 9000));
                let addresses: Vec<_> = handle
                    .address()
                    .get()
                    .execute()
                    .try_collect()
                    .await
                    .unwrap();
                let has = |ip: &str| {
                    let ip: IpAddr = ip.parse().unwrap();
                    addresses
                        .iter()
                        .any(|a| a.attributes.contains(&AddressAttribute::Address(ip)))
                };
                assert!(has("10.77.0.2") && has("fd00:77::2"), "{addresses:?}");
                let routes: Vec<_> = handle
                    .route()
                    .get(RouteMessageBuilder::<std::net::Ipv4Addr>::new().build())
                    .execute()
                    .try_collect()
                    .await
                    .unwrap();
                let gateway = netlink_packet_route::route::RouteAttribute::Gateway(
                    netlink_packet_route::route::RouteAddress::Inet("10.77.0.1".parse().unwrap()),
                );
                assert!(
                    routes
                        .iter()
                        .any(|r| r.header.destination_prefix_length == 0
                            && r.attributes.contains(&gateway)),
                    "no default route via 10.77.0.1: {routes:?}"
                );
            });
            // A MAC no NIC has is named in the error.
            let mut missing = plan.clone();
            missing.nics[0].mac = [2, 0, 0, 0, 0, 9];
            let err = apply(&missing, Duration::from_secs(10))
                .unwrap_err()
                .to_string();
            assert!(err.contains("02:00:00:00:00:09"), "{err}");
        })
        .join()
        .expect("the test thread");
    }

    /// In a private "guest" namespace: a NIC hot-added while SetupNetwork waits for it is
    /// moved into the container's own namespace and configured there, with lo up; a
    /// retried call is fine; a NIC that never comes is named; RemoveNetwork deletes it.
    #[test]
    fn a_members_nic_moves_into_its_own_namespace() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (it makes network namespaces and links)"
        );
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let guest = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
            let guest = std::fs::File::open(guest).expect("the guest namespace");
            let mac = [2, 0, 0, 0, 7, 1];
            // The "VMM" adds the NIC a little after the call began.
            let plugger = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                nix::sched::setns(&guest, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                run(Duration::from_secs(5), async move {
                    let (connection, handle, _) = rtnetlink::new_connection().unwrap();
                    tokio::spawn(connection);
                    handle
                        .link()
                        .add(
                            rtnetlink::LinkVeth::new("eth3", "peer3")
                                .address(mac.to_vec())
                                .build(),
                        )
                        .execute()
                        .await
                        .unwrap();
                    Ok(())
                })
                .expect("plugging");
            });
            let name = format!("apply-test-{}", std::process::id());
            let plan = Plan {
                nics: vec![Nic {
                    name: "eth0".into(),
                    mac,
                    mtu: 1400,
                    addresses: vec![("10.78.0.2".parse().unwrap(), 24)],
                }],
                routes: vec![],
                namespace: Some(name.clone()),
            };
            apply(&plan, Duration::from_secs(10)).expect("apply");
            plugger.join().expect("plugger");
            apply(&plan, Duration::from_secs(10)).expect("apply again");
            // Gone from the guest's namespace...
            let here = run(Duration::from_secs(5), present(vec![mac])).unwrap();
            assert!(here.is_empty(), "the NIC stayed in the guest's namespace");
            // ...and configured in the container's, with lo up.
            let path = namespace::path_of(&name);
            let (names, addresses) = namespace::within(&path, || {
                run(Duration::from_secs(5), async {
                    let (connection, handle, _) = rtnetlink::new_connection().unwrap();
                    tokio::spawn(connection);
                    let links = links(&handle).await?;
                    let names: Vec<(String, bool)> = links
                        .iter()
                        .map(|l| {
                            let name = l
                                .attributes
                                .iter()
                                .find_map(|a| match a {
                                    LinkAttribute::IfName(n) => Some(n.clone()),
                                    _ => None,
                                })
                                .unwrap_or_default();
                            let up = l
                                .header
                                .flags
                                .contains(netlink_packet_route::link::LinkFlags::Up);
                            (name, up)
                        })
                        .collect();
                    let addresses: Vec<_> = handle
                        .address()
                        .get()
                        .execute()
                        .try_collect()
                        .await
                        .unwrap();
                    Ok((names, addresses))
                })
            })
            .expect("inside");
            assert!(names.contains(&("lo".to_string(), true)), "{names:?}");
            assert!(names.contains(&("eth0".to_string(), true)), "{names:?}");
            let ip: IpAddr = "10.78.0.2".parse().unwrap();
            assert!(
                addresses
                    .iter()
                    .any(|a| a.attributes.contains(&AddressAttribute::Address(ip))),
                "{addresses:?}"
            );
            // Leaving, its NIC comes back under a name of the kernel's choosing.
            let back = evacuate(&name, Duration::from_secs(5)).expect("evacuate");
            assert_eq!(back, ["02:00:00:00:07:01"]);
            let here = run(Duration::from_secs(5), present(vec![mac])).unwrap();
            assert_eq!(here, [mac], "the NIC did not come back");
            assert!(evacuate(&name, Duration::from_secs(5)).unwrap().is_empty());
            // A NIC that never comes is named once the deadline passes.
            let mut never = plan.clone();
            never.nics[0].mac = [2, 0, 0, 0, 7, 9];
            never.namespace = Some(format!("{name}-never"));
            let err = apply(&never, Duration::from_secs(1))
                .unwrap_err()
                .to_string();
            assert!(err.contains("02:00:00:00:07:09"), "{err}");
            for n in [name.clone(), format!("{name}-never")] {
                namespace::remove(&n).expect("remove");
                assert!(!namespace::path_of(&n).exists());
                namespace::remove(&n).expect("a second remove is fine");
            }
        })
        .join()
        .expect("the test thread");
    }
}
