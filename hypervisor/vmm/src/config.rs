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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    pub rng: bool,
    pub vsock: Option<VsockConfig>,
    pub disks: Vec<DiskConfig>,
    pub fs: Vec<FsConfig>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("--disk {spec:?}: {why}")]
    Disk { spec: String, why: &'static str },
    #[error("--fs {spec:?}: {why}")]
    Fs { spec: String, why: &'static str },
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
