//! Carrying out a [`Plan`] over netlink in the agent's network namespace (the guest's
//! own, which the pod's containers share), on a one-thread tokio runtime, within a
//! deadline.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::stream::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use super::plan::{Nic, Plan, Route};
use super::NetworkError;

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
    if plan.nics.is_empty() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(NetworkError::Runtime)?;
    runtime.block_on(async {
        match tokio::time::timeout(deadline, configure(plan)).await {
            Ok(result) => result,
            Err(_) => Err(NetworkError::Timeout(deadline.as_secs())),
        }
    })
}

async fn configure(plan: &Plan) -> Result<(), NetworkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Runtime)?;
    tokio::spawn(connection);
    let links: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(failed("listing links".into()))?;
    let mut indices = Vec::new();
    for nic in &plan.nics {
        let index = links
            .iter()
            .find(|l| {
                l.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::Address(m) if m.as_slice() == nic.mac))
            })
            .map(|l| l.header.index)
            .ok_or_else(|| NetworkError::NoSuchNic {
                mac: nic
                    .mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
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
}
