//! SetupNetwork's request, checked: every name, MAC, address and route is parsed here and
//! nowhere else, and the counts are bounded.

use std::net::IpAddr;

use ward_agent_protocol::agent::{IpNet, SetupNetworkRequest};

use super::NetworkError;

pub const MAX_INTERFACES: usize = 16;
pub const MAX_ADDRESSES: usize = 64;
pub const MAX_ROUTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub addresses: Vec<(IpAddr, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub device: String,
    pub source: Option<IpAddr>,
}

impl Route {
    /// The route's address family: its destination's, else its gateway's, else IPv4.
    pub fn is_ipv6(&self) -> bool {
        self.destination
            .map(|(ip, _)| ip)
            .or(self.gateway)
            .is_some_and(|ip| ip.is_ipv6())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub nics: Vec<Nic>,
    pub routes: Vec<Route>,
    /// A namespace of one container's own, by name (None: the guest's own namespace).
    pub namespace: Option<String>,
}

/// A container's network namespace name: 1 to 64 of [A-Za-z0-9_.-], not `.` or `..`
/// (it becomes a file name under /run/ward/netns).
pub fn parse_namespace(name: &str) -> Result<Option<String>, NetworkError> {
    if name.is_empty() {
        return Ok(None);
    }
    let ok = name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(Some(name.to_string()))
    } else {
        Err(invalid(format!(
            "{name:?} is not a namespace name (1 to 64 of [A-Za-z0-9_.-])"
        )))
    }
}

fn invalid(message: String) -> NetworkError {
    NetworkError::Invalid(message)
}

pub fn parse_mac(text: &str) -> Result<[u8; 6], NetworkError> {
    let bad = || invalid(format!("MAC {text:?} is not six hex bytes"));
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

fn parse_ip(text: &str, what: &str) -> Result<IpAddr, NetworkError> {
    text.parse()
        .map_err(|_| invalid(format!("{what} {text:?} is not an IP address")))
}

fn parse_net(net: &IpNet, what: &str) -> Result<(IpAddr, u8), NetworkError> {
    let ip = parse_ip(&net.address, what)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if net.prefix > max {
        return Err(invalid(format!(
            "{what} {}/{} has a prefix longer than {max}",
            net.address, net.prefix
        )));
    }
    Ok((ip, net.prefix as u8))
}

/// A Linux interface name: 1 to 15 bytes, no '/', ':', whitespace or NUL.
fn check_name(name: &str) -> Result<(), NetworkError> {
    let ok = (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{name:?} is not an interface name")))
    }
}

pub fn parse(req: &SetupNetworkRequest) -> Result<Plan, NetworkError> {
    if req.interfaces.len() > MAX_INTERFACES || req.routes.len() > MAX_ROUTES {
        return Err(invalid(format!(
            "{} interfaces and {} routes; at most {MAX_INTERFACES} and {MAX_ROUTES}",
            req.interfaces.len(),
            req.routes.len()
        )));
    }
    let mut nics: Vec<Nic> = Vec::new();
    for interface in &req.interfaces {
        check_name(&interface.name)?;
        let mac = parse_mac(&interface.mac)?;
        if !(68..=65535).contains(&interface.mtu) {
            return Err(invalid(format!(
                "MTU {} of {} is outside 68..65535",
                interface.mtu, interface.name
            )));
        }
        if interface.addresses.len() > MAX_ADDRESSES {
            return Err(invalid(format!(
                "{} has {} addresses; at most {MAX_ADDRESSES}",
                interface.name,
                interface.addresses.len()
            )));
        }
        if nics
            .iter()
            .any(|n| n.name == interface.name || n.mac == mac)
        {
            return Err(invalid(format!(
                "interface {} or MAC {} given twice",
                interface.name, interface.mac
            )));
        }
        let addresses = interface
            .addresses
            .iter()
            .map(|a| parse_net(a, "address"))
            .collect::<Result<_, _>>()?;
        nics.push(Nic {
            name: interface.name.clone(),
            mac,
            mtu: interface.mtu,
            addresses,
        });
    }
    let mut routes = Vec::new();
    for route in &req.routes {
        if !nics.iter().any(|n| n.name == route.device) {
            return Err(invalid(format!(
                "a route names device {:?}, which is not among the interfaces",
                route.device
            )));
        }
        let destination = route
            .destination
            .as_ref()
            .map(|d| parse_net(d, "route destination"))
            .transpose()?;
        let optional =
            |text: &str, what| (!text.is_empty()).then(|| parse_ip(text, what)).transpose();
        let parsed = Route {
            destination,
            gateway: optional(&route.gateway, "gateway")?,
            device: route.device.clone(),
            source: optional(&route.source, "route source")?,
        };
        let families: Vec<bool> = [
            parsed.destination.map(|(ip, _)| ip),
            parsed.gateway,
            parsed.source,
        ]
        .into_iter()
        .flatten()
        .map(|ip| ip.is_ipv6())
        .collect();
        if families.windows(2).any(|w| w[0] != w[1]) {
            return Err(invalid(format!("route {route:?} mixes IPv4 and IPv6")));
        }
        routes.push(parsed);
    }
    Ok(Plan {
        nics,
        routes,
        namespace: parse_namespace(&req.namespace)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_agent_protocol::agent::{NetInterface, NetRoute};

    fn net(address: &str, prefix: u32) -> IpNet {
        let mut n = IpNet::new();
        n.address = address.into();
        n.prefix = prefix;
        n
    }

    fn request() -> SetupNetworkRequest {
        let mut eth0 = NetInterface::new();
        eth0.name = "eth0".into();
        eth0.mac = "0a:58:0a:58:00:02".into();
        eth0.mtu = 1500;
        eth0.addresses = vec![net("10.88.0.2", 16), net("fd00::2", 64)];
        let mut default = NetRoute::new();
        default.gateway = "10.88.0.1".into();
        default.device = "eth0".into();
        let mut req = SetupNetworkRequest::new();
        req.interfaces = vec![eth0];
        req.routes = vec![default];
        req
    }

    #[test]
    fn a_podman_network_parses() {
        let plan = parse(&request()).unwrap();
        assert_eq!(plan.nics[0].mac, [0x0a, 0x58, 0x0a, 0x58, 0, 2]);
        assert_eq!(
            plan.nics[0].addresses[0],
            ("10.88.0.2".parse().unwrap(), 16)
        );
        assert_eq!(plan.routes[0].gateway, Some("10.88.0.1".parse().unwrap()));
        assert!(plan.routes[0].destination.is_none());
        assert!(!plan.routes[0].is_ipv6());
    }

    #[test]
    fn a_containers_own_namespace_is_named() {
        let mut req = request();
        assert_eq!(parse(&req).unwrap().namespace, None);
        req.namespace = "c1-web.app_2".into();
        assert_eq!(
            parse(&req).unwrap().namespace.as_deref(),
            Some("c1-web.app_2")
        );
    }

    #[test]
    fn bad_requests_are_refused_with_their_reason() {
        type Spoil = Box<dyn Fn(&mut SetupNetworkRequest)>;
        let cases: Vec<(Spoil, &str)> = vec![
            (
                Box::new(|r| r.interfaces[0].mac = "0a:58".into()),
                "six hex bytes",
            ),
            (
                Box::new(|r| r.interfaces[0].mac = "zz:58:0a:58:00:02".into()),
                "six hex bytes",
            ),
            (
                Box::new(|r| r.interfaces[0].name = "a/b".into()),
                "not an interface name",
            ),
            (
                Box::new(|r| r.interfaces[0].name = "x".repeat(16)),
                "not an interface name",
            ),
            (Box::new(|r| r.interfaces[0].mtu = 20), "outside 68..65535"),
            (
                Box::new(|r| r.interfaces[0].addresses[0].prefix = 33),
                "prefix longer than 32",
            ),
            (
                Box::new(|r| r.interfaces[0].addresses[0].address = "10.88".into()),
                "not an IP",
            ),
            (
                Box::new(|r| r.routes[0].device = "eth9".into()),
                "not among the interfaces",
            ),
            (
                Box::new(|r| r.routes[0].source = "fd00::2".into()),
                "mixes IPv4 and IPv6",
            ),
            (
                Box::new(|r| {
                    let again = r.interfaces[0].clone();
                    r.interfaces.push(again)
                }),
                "given twice",
            ),
            (
                Box::new(|r| r.routes = vec![r.routes[0].clone(); MAX_ROUTES + 1]),
                "at most",
            ),
            (
                Box::new(|r| r.namespace = "../etc".into()),
                "not a namespace name",
            ),
            (
                Box::new(|r| r.namespace = "..".into()),
                "not a namespace name",
            ),
            (
                Box::new(|r| r.namespace = "n".repeat(65)),
                "not a namespace name",
            ),
        ];
        for (spoil, expected) in cases {
            let mut req = request();
            spoil(&mut req);
            let err = parse(&req).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} (expected {expected:?})");
        }
    }
}
