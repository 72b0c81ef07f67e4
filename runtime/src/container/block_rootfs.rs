//! A bundle rootfs that is a whole file system on a block device, mounted on the host (a
//! loop-mounted ext4 image, containerd's devmapper snapshot): the device goes to the VM
//! as a disk and the agent mounts it as the container's root, instead of the directory
//! being shared over 9p or virtio-fs.
//!
//! One file system must never have two writers. Before the guest gets the device, the
//! host's mount is remounted read-only: that flushes what the host wrote, and the host
//! writes nothing more (no journal, no superblock) while the guest owns the device. It
//! stays read-only after the container is gone: the host's caches predate the guest's
//! writes, and writing through them would corrupt what the guest wrote. Whoever mounted
//! it unmounts it (engines do) and a new mount sees the guest's changes.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The file systems the guest kernel mounts from a block device.
const FSTYPES: [&str; 2] = ["ext4", "xfs"];

#[derive(Debug, Error)]
pub enum BlockRootfsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("remounting the rootfs {path} read-only on the host, so that the guest is its only writer: {source}")]
    Remount { path: PathBuf, source: nix::Error },
}

/// A rootfs found to be a block device's file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRootfs {
    pub major: u32,
    pub minor: u32,
    pub fstype: String,
    /// The host's mount point (the bundle's rootfs, resolved).
    pub mount_point: PathBuf,
    /// The mount's source as the host names it (`/dev/loop3`), for the log.
    pub source: String,
    /// Mount options of the file system the guest should keep (`ro` is decided apart).
    pub read_only: bool,
}

/// One line of /proc/self/mountinfo, the fields used here.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    major: u32,
    minor: u32,
    root: String,
    mount_point: String,
    options: String,
    fstype: String,
    source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let fields: Vec<&str> = before.split(' ').collect();
    let rest: Vec<&str> = after.split(' ').collect();
    if fields.len() < 6 || rest.len() < 2 {
        return None;
    }
    let (major, minor) = fields[2].split_once(':')?;
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: unescape(fields[3]),
        mount_point: unescape(fields[4]),
        options: fields[5].to_string(),
        fstype: rest[0].to_string(),
        source: unescape(rest[1]),
    })
}

/// The mount at `mount_point` in `mountinfo` (the last one: it hides those below), if it
/// is a whole block-device file system the guest can mount.
fn find(
    mountinfo: &str,
    mount_point: &Path,
    is_block: impl Fn(u32, u32) -> bool,
) -> Option<BlockRootfs> {
    let wanted = mount_point.to_string_lossy();
    let entry = mountinfo
        .lines()
        .rev()
        .filter_map(parse_line)
        .find(|e| e.mount_point == wanted)?;
    // A bind of a directory inside the file system is not the whole device.
    if entry.root != "/" || !FSTYPES.contains(&entry.fstype.as_str()) {
        return None;
    }
    if !is_block(entry.major, entry.minor) {
        return None;
    }
    Some(BlockRootfs {
        major: entry.major,
        minor: entry.minor,
        read_only: entry.options.split(',').any(|o| o == "ro"),
        fstype: entry.fstype,
        mount_point: mount_point.to_path_buf(),
        source: entry.source,
    })
}

/// Whether the host has block device `major:minor` (sysfs lists every one).
fn host_has_block(major: u32, minor: u32) -> bool {
    Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists()
}

/// The block device whose file system `rootfs` is, if it is one.
pub fn detect(rootfs: &Path) -> Result<Option<BlockRootfs>, BlockRootfsError> {
    let resolved = std::fs::canonicalize(rootfs).map_err(|source| BlockRootfsError::Read {
        path: rootfs.to_path_buf(),
        source,
    })?;
    let path = Path::new("/proc/self/mountinfo");
    let mountinfo = std::fs::read_to_string(path).map_err(|source| BlockRootfsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(find(&mountinfo, &resolved, host_has_block))
}

/// Makes the host's mount read-only (flushing it) before the guest writes the device.
pub fn hand_over(rootfs: &BlockRootfs) -> Result<(), BlockRootfsError> {
    if rootfs.read_only {
        return Ok(());
    }
    use nix::mount::{mount, MsFlags};
    mount(
        None::<&str>,
        &rootfs.mount_point,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|source| BlockRootfsError::Remount {
        path: rootfs.mount_point.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
96 22 7:3 / /run/bundles/c1/rootfs rw,relatime shared:50 - ext4 /dev/loop3 rw
97 22 7:4 /sub /run/bundles/c2/rootfs rw,relatime shared:51 - ext4 /dev/loop4 rw
98 22 0:50 / /run/bundles/c3/rootfs rw,relatime shared:52 - overlay overlay rw,lowerdir=/a
99 22 253:5 / /run/bundles/c4\\040x/rootfs ro,relatime - xfs /dev/mapper/thin-5 ro
100 96 0:51 / /run/bundles/c1/rootfs rw - tmpfs tmpfs rw
";

    fn any_block(_: u32, _: u32) -> bool {
        true
    }

    #[test]
    fn a_loop_mounted_ext4_rootfs_is_found() {
        let mut info = MOUNTINFO.lines().take(5).collect::<Vec<_>>().join("\n");
        info.push('\n');
        let found = find(&info, Path::new("/run/bundles/c1/rootfs"), any_block).unwrap();
        assert_eq!((found.major, found.minor), (7, 3));
        assert_eq!(found.fstype, "ext4");
        assert_eq!(found.source, "/dev/loop3");
        assert!(!found.read_only);
    }

    #[test]
    fn escaped_paths_and_read_only_xfs() {
        let found = find(MOUNTINFO, Path::new("/run/bundles/c4 x/rootfs"), any_block).unwrap();
        assert_eq!((found.major, found.minor, found.read_only), (253, 5, true));
        assert_eq!(found.fstype, "xfs");
    }

    #[test]
    fn what_is_not_a_whole_block_file_system_stays_a_share() {
        // A subdirectory bind, an overlay, a path that is no mount, a tmpfs stacked on top.
        for path in [
            "/run/bundles/c2/rootfs",
            "/run/bundles/c3/rootfs",
            "/run/bundles/none",
            "/run/bundles/c1/rootfs",
        ] {
            assert_eq!(find(MOUNTINFO, Path::new(path), any_block), None, "{path}");
        }
        // Numbers the host has no block device for.
        let info = MOUNTINFO.lines().nth(1).unwrap();
        assert_eq!(
            find(info, Path::new("/run/bundles/c1/rootfs"), |_, _| false),
            None
        );
        // Garbage lines are skipped.
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(parse_line("1 2 x:y / / rw - ext4 /dev/x rw"), None);
    }
}
