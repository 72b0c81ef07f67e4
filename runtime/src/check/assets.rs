//! The guest assets: the kernel and the initramfs are there and readable, the kernel was
//! built from this source tree's configuration, and the agent in the initramfs speaks
//! this runtime's protocol.

use std::io::Read;
use std::path::Path;

use thiserror::Error;

use super::report::Item;

/// Where tools/build-initrd writes the agent's version marker inside the initramfs.
pub const AGENT_MARKER: &str = "etc/ward-agent-version";

#[derive(Debug, Error, PartialEq)]
pub enum InitrdError {
    #[error("not a gzip-compressed initramfs: {0}")]
    Gzip(String),
    #[error("malformed cpio archive: {0}")]
    Cpio(String),
}

/// What the runtime expects of the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub version: String,
    pub protocol: u32,
}

/// The files of a newc cpio archive: (name, mode, data); stops at the trailer.
pub fn cpio_entries(archive: &[u8]) -> Result<Vec<(String, u32, Vec<u8>)>, InitrdError> {
    let field = |header: &[u8], n: usize| -> Result<usize, InitrdError> {
        let hex = std::str::from_utf8(&header[6 + 8 * n..14 + 8 * n])
            .map_err(|_| InitrdError::Cpio("non-ASCII header".into()))?;
        usize::from_str_radix(hex, 16).map_err(|_| InitrdError::Cpio(format!("bad field {hex:?}")))
    };
    let align = |n: usize| (n + 3) & !3;
    let mut entries = Vec::new();
    let mut at = 0;
    loop {
        let header = archive
            .get(at..at + 110)
            .ok_or_else(|| InitrdError::Cpio("archive ends without a trailer".into()))?;
        if &header[..6] != b"070701" && &header[..6] != b"070702" {
            return Err(InitrdError::Cpio(format!("no newc magic at offset {at}")));
        }
        let mode = field(header, 1)? as u32;
        let size = field(header, 6)?;
        let name_size = field(header, 11)?;
        let name_end = at + 110 + name_size;
        let name = archive
            .get(at + 110..name_end.saturating_sub(1))
            .ok_or_else(|| InitrdError::Cpio("truncated name".into()))?;
        let name = String::from_utf8_lossy(name).into_owned();
        let data_start = align(name_end);
        let data = archive
            .get(data_start..data_start + size)
            .ok_or_else(|| InitrdError::Cpio(format!("truncated data of {name}")))?;
        if name == "TRAILER!!!" {
            return Ok(entries);
        }
        entries.push((name, mode, data.to_vec()));
        at = align(data_start + size);
    }
}

/// The (first) archive of a gzip-compressed initramfs.
pub fn initrd_entries(gz: &[u8]) -> Result<Vec<(String, u32, Vec<u8>)>, InitrdError> {
    let mut archive = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut archive)
        .map_err(|e| InitrdError::Gzip(e.to_string()))?;
    cpio_entries(&archive)
}

/// The agent items for the bytes of the initrd.
pub fn agent_version(initrd_gz: &[u8], expected: &Expected) -> Item {
    let entries = match initrd_entries(initrd_gz) {
        Ok(entries) => entries,
        Err(e) => {
            return Item::fail(
                "assets.agent",
                format!("cannot read the initramfs: {e}"),
                "rebuild it with `make initrd` (tools/build-initrd)",
            )
        }
    };
    let is_file = |mode: u32| mode & 0o170000 == 0o100000;
    let Some((_, _, init)) = entries.iter().find(|(n, m, _)| n == "init" && is_file(*m)) else {
        return Item::fail(
            "assets.agent",
            "the initramfs has no /init (the agent)",
            "rebuild it with `make initrd`",
        );
    };
    let Some((_, _, marker)) = entries.iter().find(|(n, _, _)| n == AGENT_MARKER) else {
        return Item::warn(
            "assets.agent",
            format!("the initramfs has no /{AGENT_MARKER}: the agent's version is unknown"),
            "rebuild it with `make initrd` (newer builders write the marker)",
        );
    };
    let marker = String::from_utf8_lossy(marker);
    let value = |key: &str| {
        marker.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let version = value("version").unwrap_or_default();
    let protocol = value("protocol").and_then(|p| p.parse::<u32>().ok());
    let found = format!(
        "agent {version}, protocol {}",
        protocol
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into())
    );
    let detail = format!("/init: {} bytes", init.len());
    if protocol != Some(expected.protocol) {
        Item::fail(
            "assets.agent",
            format!(
                "{found}; this runtime speaks protocol {}: they cannot talk",
                expected.protocol
            ),
            "rebuild the initramfs from this source tree: `make initrd`",
        )
        .detail(detail)
    } else if version != expected.version {
        Item::warn(
            "assets.agent",
            format!("{found}; the runtime is {}", expected.version),
            "rebuild the initramfs from this source tree: `make initrd`",
        )
        .detail(detail)
    } else {
        Item::pass("assets.agent", format!("{found}, as the runtime")).detail(detail)
    }
}

/// Whether `path` is a readable regular file; Err says why not.
fn readable(path: &Path) -> Result<u64, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    std::fs::File::open(path).map_err(|e| e.to_string())?;
    Ok(meta.len())
}

fn presence(id: &str, what: &str, key: &str, path: &Path) -> (Item, bool) {
    match readable(path) {
        Ok(size) => (
            Item::pass(id, format!("{} ({size} bytes)", path.display())),
            true,
        ),
        Err(why) => (
            Item::fail(
                id,
                format!("{what} {} ({key}): {why}", path.display()),
                format!("build it with `make assets`, or point {key} at it"),
            ),
            false,
        ),
    }
}

/// The hash of the kernel configuration now in the source tree, Ok, or why it cannot
/// be known (no checkout, the builder failed).
pub type CurrentHash = Result<String, String>;

fn kernel_config(kernel: &Path, current: &CurrentHash) -> Item {
    let hash_file = kernel.with_file_name("kernel.hash");
    let built = match std::fs::read_to_string(&hash_file) {
        Ok(text) => text.trim().to_string(),
        Err(e) => {
            return Item::warn(
                "assets.kernel-config",
                format!(
                    "cannot verify the kernel's configuration: {}: {e}",
                    hash_file.display()
                ),
                "build the kernel with tools/build-guest-kernel, which writes kernel.hash",
            )
        }
    };
    match current {
        Err(why) => Item::warn(
            "assets.kernel-config",
            format!("cannot verify the kernel's configuration: {why}"),
            "run `ward check` from a build of a source checkout to compare",
        )
        .detail(format!("kernel.hash {built}")),
        Ok(current) if *current == built => Item::pass(
            "assets.kernel-config",
            "built from the current guest-kernel-config/",
        )
        .detail(format!("hash {built}")),
        Ok(current) => Item::warn(
            "assets.kernel-config",
            "the kernel was built from another guest-kernel-config/ than the current one",
            "rebuild it: `make kernel` (tools/build-guest-kernel)",
        )
        .detail(format!("kernel.hash {built}, current {current}")),
    }
}

pub fn check(
    kernel: &Path,
    initrd: &Path,
    current: &CurrentHash,
    expected: &Expected,
) -> Vec<Item> {
    let (kernel_item, kernel_ok) = presence("assets.kernel", "kernel", "guest.kernel", kernel);
    let (initrd_item, initrd_ok) = presence("assets.initrd", "initramfs", "guest.initrd", initrd);
    let mut items = vec![kernel_item, initrd_item];
    if kernel_ok {
        items.push(kernel_config(kernel, current));
    }
    if initrd_ok {
        items.push(match std::fs::read(initrd) {
            Ok(bytes) => agent_version(&bytes, expected),
            Err(e) => Item::fail(
                "assets.agent",
                format!("cannot read {}: {e}", initrd.display()),
                "check its permissions",
            ),
        });
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Status;
    use std::io::Write;

    /// A newc entry, as tools/build-initrd writes it.
    fn entry(ino: u32, name: &str, mode: u32, data: &[u8]) -> Vec<u8> {
        let name_z = format!("{name}\0");
        let fields = [
            ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name_z.len() as u32,
            0,
        ];
        let mut out = b"070701".to_vec();
        for f in fields {
            out.extend(format!("{f:08X}").bytes());
        }
        out.extend(name_z.bytes());
        out.resize(out.len().div_ceil(4) * 4, 0);
        out.extend(data);
        out.resize(out.len().div_ceil(4) * 4, 0);
        out
    }

    fn initrd(marker: Option<&str>) -> Vec<u8> {
        let mut archive = entry(1, "etc", 0o040755, b"");
        archive.extend(entry(2, "init", 0o100755, b"\x7fELF agent"));
        if let Some(m) = marker {
            archive.extend(entry(3, AGENT_MARKER, 0o100644, m.as_bytes()));
        }
        archive.extend(entry(0, "TRAILER!!!", 0, b""));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&archive).unwrap();
        gz.finish().unwrap()
    }

    fn expected() -> Expected {
        Expected {
            version: "0.1.0".into(),
            protocol: 1,
        }
    }

    #[test]
    fn matching_marker_passes() {
        let item = agent_version(&initrd(Some("version=0.1.0\nprotocol=1\n")), &expected());
        assert_eq!(item.status, Status::Pass, "{item:?}");
    }

    #[test]
    fn mismatched_markers() {
        let item = agent_version(&initrd(Some("version=0.0.9\nprotocol=1\n")), &expected());
        assert_eq!(item.status, Status::Warn, "{item:?}");
        assert!(item.message.contains("0.0.9"));
        let item = agent_version(&initrd(Some("version=0.1.0\nprotocol=2\n")), &expected());
        assert_eq!(item.status, Status::Fail, "{item:?}");
        let item = agent_version(&initrd(None), &expected());
        assert_eq!(item.status, Status::Warn, "{item:?}");
        let item = agent_version(b"not gzip", &expected());
        assert_eq!(item.status, Status::Fail, "{item:?}");
    }

    #[test]
    fn missing_kernel_fails_and_hashes_compare() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("vmlinux");
        let initrd_path = dir.path().join("initrd.img");
        std::fs::write(&initrd_path, initrd(Some("version=0.1.0\nprotocol=1\n"))).unwrap();
        let items = check(&kernel, &initrd_path, &Ok("abc".into()), &expected());
        assert_eq!(items[0].status, Status::Fail);
        assert!(items[0].message.contains("guest.kernel"), "{:?}", items[0]);
        assert!(items.iter().all(|i| i.id != "assets.kernel-config"));
        assert_eq!(items.last().unwrap().status, Status::Pass);

        std::fs::write(&kernel, b"kernel").unwrap();
        let status = |current: CurrentHash| {
            let items = check(&kernel, &initrd_path, &current, &expected());
            items
                .iter()
                .find(|i| i.id == "assets.kernel-config")
                .unwrap()
                .status
        };
        assert_eq!(status(Ok("abc".into())), Status::Warn, "no kernel.hash");
        std::fs::write(dir.path().join("kernel.hash"), "abc\n").unwrap();
        assert_eq!(status(Ok("abc".into())), Status::Pass);
        assert_eq!(status(Ok("def".into())), Status::Warn);
        assert_eq!(status(Err("no source tree".into())), Status::Warn);
    }
}
