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

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    pub rng: bool,
    pub vsock: Option<VsockConfig>,
    pub disks: Vec<DiskConfig>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("--disk {spec:?}: {why}")]
    Disk { spec: String, why: &'static str },
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
