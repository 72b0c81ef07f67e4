//! What the command line asks for, independent of how it was parsed.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The name the API uses (`remove_disk`); also the virtio-blk serial the guest sees.
    pub id: String,
    pub path: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    pub cid: u32,
    /// Hybrid vsock: the host connects here and writes `CONNECT <port>\n`.
    pub uds: PathBuf,
}

/// A directory shared through virtio-fs, served by a vhost-user backend (virtiofsd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// The tag the guest mounts it by.
    pub tag: String,
    /// The backend's vhost-user socket.
    pub socket: PathBuf,
}

/// A virtio-net device over a tap that ward-vmm inherits already open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The tap's file descriptor: /dev/net/tun opened by the parent in the container's
    /// network namespace, with TUNSETIFF IFF_TAP | IFF_NO_PI | IFF_VNET_HDR.
    pub fd: i32,
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// The MTU the guest is told (VIRTIO_NET_F_MTU); none: the guest picks its own.
    pub mtu: Option<u16>,
}

/// Most `--net` devices per VM.
pub const MAX_NETS: usize = 4;

/// Smallest and largest MTU offered to the guest: IPv4's minimum, and what a 64 KiB frame
/// (the device's bound) holds after the Ethernet header.
pub const MIN_MTU: u16 = 68;
pub const MAX_MTU: u16 = 65521;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    pub rng: bool,
    pub vsock: Option<VsockConfig>,
    pub disks: Vec<DiskConfig>,
    pub fs: Vec<FsConfig>,
    pub nets: Vec<NetConfig>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("--disk {spec:?}: {why}")]
    Disk { spec: String, why: &'static str },
    #[error("--fs {spec:?}: {why}")]
    Fs { spec: String, why: &'static str },
    #[error("--net {spec:?}: {why}")]
    Net { spec: String, why: &'static str },
}

impl NetConfig {
    /// Parses `fd=N,mac=aa:bb:cc:dd:ee:ff[,mtu=M]`.
    pub fn parse(spec: &str) -> Result<Self, Error> {
        let bad = |why| Error::Net {
            spec: spec.to_string(),
            why,
        };
        let (mut fd, mut mac, mut mtu) = (None, None, None);
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("fd", v)) => match v.parse::<i32>() {
                    // 0 to 2 are stdin, stdout and stderr, never the tap.
                    Ok(n) if n >= 3 => fd = Some(n),
                    _ => return Err(bad("fd must be a file descriptor number of 3 or more")),
                },
                Some(("mac", v)) => {
                    let m =
                        parse_mac(v).ok_or_else(|| bad("mac must be six hex bytes a:b:c:d:e:f"))?;
                    if m[0] & 1 != 0 {
                        return Err(bad("mac must be a unicast address (first byte even)"));
                    }
                    if m == [0; 6] {
                        return Err(bad("mac must not be all zero"));
                    }
                    mac = Some(m);
                }
                Some(("mtu", v)) => match v.parse::<u16>() {
                    Ok(n) if (MIN_MTU..=MAX_MTU).contains(&n) => mtu = Some(n),
                    _ => return Err(bad("mtu must be 68 to 65521")),
                },
                _ => return Err(bad("expected fd=N,mac=aa:bb:cc:dd:ee:ff[,mtu=M]")),
            }
        }
        Ok(NetConfig {
            fd: fd.ok_or_else(|| bad("missing fd="))?,
            mac: mac.ok_or_else(|| bad("missing mac="))?,
            mtu,
        })
    }

    /// The MAC address as `aa:bb:cc:dd:ee:ff`.
    pub fn mac_string(&self) -> String {
        let m = self.mac;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Six colon-separated bytes of one or two hex digits each.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}

/// Checks a set of `--net` devices: at most [`MAX_NETS`], no fd or MAC address twice.
pub fn check_nets(nets: &[NetConfig]) -> Result<(), String> {
    if nets.len() > MAX_NETS {
        return Err(format!("{} --net devices, at most {MAX_NETS}", nets.len()));
    }
    for (i, n) in nets.iter().enumerate() {
        for o in &nets[..i] {
            if o.fd == n.fd {
                return Err(format!("--net fd={} given twice", n.fd));
            }
            if o.mac == n.mac {
                return Err(format!("--net mac={} given twice", n.mac_string()));
            }
        }
    }
    Ok(())
}

impl FsConfig {
    /// Parses `tag=TAG,socket=PATH`; the tag is at most 36 bytes (virtio-fs's field).
    pub fn parse(spec: &str) -> Result<Self, Error> {
        let bad = |why| Error::Fs {
            spec: spec.to_string(),
            why,
        };
        let (mut tag, mut socket) = (None, None);
        // The socket path may contain commas: it is the rest after `socket=`.
        let mut rest = spec;
        while !rest.is_empty() {
            if let Some(path) = rest.strip_prefix("socket=") {
                if path.is_empty() {
                    return Err(bad("empty socket="));
                }
                socket = Some(PathBuf::from(path));
                break;
            }
            let (part, tail) = rest.split_once(',').unwrap_or((rest, ""));
            match part.split_once('=') {
                Some(("tag", v)) if (1..=36).contains(&v.len()) => tag = Some(v.to_string()),
                Some(("tag", _)) => return Err(bad("tag must be 1 to 36 bytes")),
                _ => return Err(bad("expected tag=TAG,socket=PATH")),
            }
            rest = tail;
        }
        Ok(FsConfig {
            tag: tag.ok_or_else(|| bad("missing tag="))?,
            socket: socket.ok_or_else(|| bad("missing socket="))?,
        })
    }
}

impl DiskConfig {
    /// Parses `path=P,id=ID[,readonly]`.
    pub fn parse(spec: &str) -> Result<Self, Error> {
        let bad = |why| Error::Disk {
            spec: spec.to_string(),
            why,
        };
        let (mut path, mut id, mut readonly) = (None, None, false);
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("path", v)) if !v.is_empty() => path = Some(PathBuf::from(v)),
                Some(("id", v)) if valid_id(v) => id = Some(v.to_string()),
                Some(("id", _)) => return Err(bad("id must be 1 to 20 of [A-Za-z0-9_.-]")),
                None if part == "readonly" => readonly = true,
                Some(("readonly", "on")) => readonly = true,
                Some(("readonly", "off")) => readonly = false,
                _ => return Err(bad("expected path=P,id=ID[,readonly]")),
            }
        }
        Ok(DiskConfig {
            path: path.ok_or_else(|| bad("missing path="))?,
            id: id.ok_or_else(|| bad("missing id="))?,
            readonly,
        })
    }
}

/// A disk ID fits the 20-byte virtio-blk serial and is safe in logs and JSON.
pub fn valid_id(id: &str) -> bool {
    (1..=20).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fs_specs() {
        let f = FsConfig::parse("tag=ward-rootfs,socket=/run/a,b.sock").unwrap();
        assert_eq!(f.tag, "ward-rootfs");
        assert_eq!(f.socket, PathBuf::from("/run/a,b.sock"));
        assert!(FsConfig::parse("socket=/s").is_err());
        assert!(FsConfig::parse("tag=x").is_err());
        assert!(FsConfig::parse(&format!("tag={},socket=/s", "x".repeat(37))).is_err());
        assert!(FsConfig::parse("tag=x,cache=auto,socket=/s").is_err());
    }

    #[test]
    fn parses_net_specs() {
        let n = NetConfig::parse("fd=3,mac=02:00:0a:0B:c:ff").unwrap();
        assert_eq!(n.fd, 3);
        assert_eq!(n.mac, [2, 0, 0x0a, 0x0b, 0x0c, 0xff]);
        assert_eq!(n.mtu, None);
        assert_eq!(n.mac_string(), "02:00:0a:0b:0c:ff");
        let n = NetConfig::parse("mtu=1400,mac=aa:bb:cc:dd:ee:ff,fd=42").unwrap();
        assert_eq!((n.fd, n.mtu), (42, Some(1400)));
        for bad in [
            "",
            "fd=3",
            "mac=02:00:00:00:00:01",
            "fd=2,mac=02:00:00:00:00:01",
            "fd=-1,mac=02:00:00:00:00:01",
            "fd=x,mac=02:00:00:00:00:01",
            "fd=3,mac=02:00:00:00:00",
            "fd=3,mac=02:00:00:00:00:01:02",
            "fd=3,mac=02:00:00:00:00:1g",
            "fd=3,mac=02:00:00:00:00:100",
            "fd=3,mac=02::00:00:00:01",
            "fd=3,mac=01:00:5e:00:00:01",
            "fd=3,mac=00:00:00:00:00:00",
            "fd=3,mac=02:00:00:00:00:01,mtu=67",
            "fd=3,mac=02:00:00:00:00:01,mtu=65522",
            "fd=3,mac=02:00:00:00:00:01,mtu=",
            "fd=3,mac=02:00:00:00:00:01,queues=2",
            "fd=3,mac=02:00:00:00:00:01,",
        ] {
            assert!(NetConfig::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let e = NetConfig::parse("fd=3").unwrap_err();
        assert_eq!(e.to_string(), "--net \"fd=3\": missing mac=");
    }

    #[test]
    fn checks_net_sets() {
        let n = |fd, last| NetConfig {
            fd,
            mac: [2, 0, 0, 0, 0, last],
            mtu: None,
        };
        assert!(check_nets(&[n(3, 1), n(4, 2)]).is_ok());
        assert!(check_nets(&[n(3, 1), n(3, 2)]).is_err());
        assert!(check_nets(&[n(3, 1), n(4, 1)]).is_err());
        assert!(check_nets(&[n(3, 1), n(4, 2), n(5, 3), n(6, 4)]).is_ok());
        assert!(check_nets(&[n(3, 1), n(4, 2), n(5, 3), n(6, 4), n(7, 5)]).is_err());
    }

    #[test]
    fn parses_disk_specs() {
        let d = DiskConfig::parse("path=/x.img,id=d1,readonly").unwrap();
        assert_eq!(d.path, PathBuf::from("/x.img"));
        assert_eq!(d.id, "d1");
        assert!(d.readonly);
        let d = DiskConfig::parse("id=root,path=/r").unwrap();
        assert!(!d.readonly);
        assert!(DiskConfig::parse("path=/x").is_err());
        assert!(DiskConfig::parse("id=a").is_err());
        assert!(DiskConfig::parse("path=/x,id=a b").is_err());
        assert!(DiskConfig::parse("path=/x,id=a,bogus").is_err());
    }
}
