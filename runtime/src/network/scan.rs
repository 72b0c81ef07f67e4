//! What a pod's network namespace holds, read over netlink: its interfaces (not loopback,
//! not ward's own taps), their addresses, and the routes of its main table that the
//! kernel does not derive from an address by itself.

use std::net::IpAddr;
use std::path::Path;

use futures_util::stream::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use super::netns::failed;
use super::{Interface, IpNet, NetworkError, Route, Snapshot};

/// The main routing table (RT_TABLE_MAIN).
const MAIN_TABLE: u32 = 254;

pub async fn snapshot(handle: &Handle, path: &Path) -> Result<Snapshot, NetworkError> {
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(failed(path, "listing links".into()))?;
    let addresses: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(failed(path, "listing addresses".into()))?;
    let mut routes: Vec<RouteMessage> = Vec::new();
    for request in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let mut found: Vec<RouteMessage> = handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .map_err(failed(path, "listing routes".into()))?;
        routes.append(&mut found);
    }
    Ok(from_messages(&links, &addresses, &routes))
}

/// The snapshot those netlink dumps describe.
pub fn from_messages(
    links: &[LinkMessage],
    addresses: &[AddressMessage],
    routes: &[RouteMessage],
) -> Snapshot {
    let interfaces: Vec<Interface> = links
        .iter()
        .filter_map(|link| interface(link, addresses))
        .collect();
    let routes = routes
        .iter()
        .filter_map(|r| route(r, &interfaces))
        .collect();
    Snapshot { interfaces, routes }
}

fn interface(link: &LinkMessage, addresses: &[AddressMessage]) -> Option<Interface> {
    if link.header.flags.contains(LinkFlags::Loopback) {
        return None;
    }
    let mut name = None;
    let mut mac = None;
    let mut mtu = 1500;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(bytes) => mac = <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    let name = name?;
    // Ethernet-like interfaces only (a tunnel has no MAC to give the guest's NIC), and
    // never a tap of ward's own.
    let mac = mac?;
    if name.ends_with("_ward") {
        return None;
    }
    let index = link.header.index;
    let addresses = addresses
        .iter()
        .filter(|a| a.header.index == index)
        .filter_map(|a| {
            let ip = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })?;
            // The guest makes its own link-local address (from the same MAC).
            if let IpAddr::V6(v6) = ip {
                if v6.segments()[0] & 0xffc0 == 0xfe80 {
                    return None;
                }
            }
            Some(IpNet {
                ip,
                prefix: a.header.prefix_len,
            })
        })
        .collect();
    Some(Interface {
        name,
        index,
        mac,
        mtu,
        addresses,
    })
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route(message: &RouteMessage, interfaces: &[Interface]) -> Option<Route> {
    let header = &message.header;
    if header.protocol == RouteProtocol::Kernel || header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(header.table);
    let (mut destination, mut gateway, mut device, mut source) = (None, None, None, None);
    for attr in &message.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => destination = ip_of(d),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::PrefSource(s) => source = ip_of(s),
            RouteAttribute::Oif(index) => {
                device = interfaces
                    .iter()
                    .find(|i| i.index == *index)
                    .map(|i| i.name.clone())
            }
            _ => {}
        }
    }
    if table != MAIN_TABLE {
        return None;
    }
    // IPv6's own link-local and multicast routes, which the guest makes itself.
    if let Some(IpAddr::V6(v6)) = destination {
        if v6.segments()[0] & 0xffc0 == 0xfe80 || v6.segments()[0] & 0xff00 == 0xff00 {
            return None;
        }
    }
    Some(Route {
        destination: destination.map(|ip| IpNet {
            ip,
            prefix: header.destination_prefix_length,
        }),
        gateway,
        device: device?,
        source,
    })
}
