//! Mount descriptions, pure: the spec's `mounts` (and the host's storages) turned into what
//! mount(2) needs — flags, propagation changes and the filesystem's data string — and the
//! symlink-safe resolution of a destination inside a root directory.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;
use thiserror::Error;

/// Longest path the agent accepts from the host (PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;
/// Most mounts a spec may list.
pub const MAX_MOUNTS: usize = 256;
/// Most options one mount may have.
pub const MAX_OPTIONS: usize = 64;
/// Where bind mount sources may be: a storage the host shared (under /run/ward), a
/// device of the guest, or the guest's sysfs (runc's rootless template binds /sys, which
/// a user namespace may not mount). Host paths mean nothing in the guest, and the
/// agent's own files (its binary, /proc/1) are none of a container's business.
pub const BIND_SOURCES: [&str; 3] = ["/run/ward", "/dev", "/sys"];
/// Symlinks followed while resolving one path, as the kernel's MAXSYMLINKS.
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MountError {
    #[error("mount option {0:?} contains a comma or a NUL byte")]
    BadOption(String),
    #[error("mount option {0:?} is not supported by ward")]
    Unsupported(String),
    #[error("{what} {path:?} is not an absolute path")]
    NotAbsolute { what: &'static str, path: String },
    #[error("{what} {path:?} contains a '..' component")]
    DotDot { what: &'static str, path: String },
    #[error("{what} is longer than {MAX_PATH_LEN} bytes or contains a NUL byte")]
    BadPath { what: &'static str },
    #[error("the mount on {0:?} has no type and is not a bind mount")]
    NoType(String),
    #[error("the mount on {destination:?} has an invalid type {fstype:?}")]
    BadType { destination: String, fstype: String },
    #[error("bind mount source {0:?} is not in the guest: sources must be under /run/ward (a storage) or /dev")]
    BindSource(String),
    #[error("the mount on {0:?} has no source")]
    NoSource(String),
    #[error("{0} mounts listed, at most {MAX_MOUNTS} are accepted")]
    TooMany(usize),
    #[error("{0} options on one mount, at most {MAX_OPTIONS} are accepted")]
    TooManyOptions(usize),
    #[error("unknown rootfs propagation {0:?}")]
    BadPropagation(String),
}

/// One mount's options, sorted into what mount(2) needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// Flags to set.
    pub flags: MsFlags,
    /// Flags the options explicitly clear ("rw", "suid", "dev", "exec"...): a remount must not
    /// carry them over from the current mount.
    pub cleared: MsFlags,
    /// Propagation changes, each its own mount(2) call after the mount.
    pub propagation: Vec<MsFlags>,
    pub bind: bool,
    pub recursive: bool,
    /// Everything else, for the filesystem (mode=755, size=64m, trans=virtio...).
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            cleared: MsFlags::empty(),
            propagation: Vec::new(),
            bind: false,
            recursive: false,
            data: Vec::new(),
        }
    }
}

impl MountOptions {
    /// The data string, comma separated.
    pub fn data_string(&self) -> String {
        self.data.join(",")
    }
}

/// Parses mount(8)-style options.
pub fn parse_options<S: AsRef<str>>(options: &[S]) -> Result<MountOptions, MountError> {
    if options.len() > MAX_OPTIONS {
        return Err(MountError::TooManyOptions(options.len()));
    }
    let mut out = MountOptions::default();
    for option in options {
        let option = option.as_ref();
        if option.contains(',') || option.contains('\0') || option.len() > MAX_PATH_LEN {
            return Err(MountError::BadOption(option.to_string()));
        }
        let (set, flag) = match option {
            "" | "defaults" => continue,
            "ro" => (true, MsFlags::MS_RDONLY),
            "rw" => (false, MsFlags::MS_RDONLY),
            "nosuid" => (true, MsFlags::MS_NOSUID),
            "suid" => (false, MsFlags::MS_NOSUID),
            "nodev" => (true, MsFlags::MS_NODEV),
            "dev" => (false, MsFlags::MS_NODEV),
            "noexec" => (true, MsFlags::MS_NOEXEC),
            "exec" => (false, MsFlags::MS_NOEXEC),
            "sync" => (true, MsFlags::MS_SYNCHRONOUS),
            "async" => (false, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (true, MsFlags::MS_DIRSYNC),
            "remount" => (true, MsFlags::MS_REMOUNT),
            "mand" => (true, MsFlags::MS_MANDLOCK),
            "nomand" => (false, MsFlags::MS_MANDLOCK),
            "noatime" => (true, MsFlags::MS_NOATIME),
            "atime" => (false, MsFlags::MS_NOATIME),
            "nodiratime" => (true, MsFlags::MS_NODIRATIME),
            "diratime" => (false, MsFlags::MS_NODIRATIME),
            "relatime" => (true, MsFlags::MS_RELATIME),
            "norelatime" => (false, MsFlags::MS_RELATIME),
            "strictatime" => (true, MsFlags::MS_STRICTATIME),
            "nostrictatime" => (false, MsFlags::MS_STRICTATIME),
            "lazytime" => (true, MsFlags::from_bits_retain(libc::MS_LAZYTIME)),
            "nolazytime" => (false, MsFlags::from_bits_retain(libc::MS_LAZYTIME)),
            "silent" => (true, MsFlags::MS_SILENT),
            "loud" => (false, MsFlags::MS_SILENT),
            "bind" => {
                out.bind = true;
                continue;
            }
            "rbind" => {
                out.bind = true;
                out.recursive = true;
                continue;
            }
            // runc's extension (copy the image's directory into a new tmpfs): not done.
            "tmpcopyup" => continue,
            "idmap" | "ridmap" => return Err(MountError::Unsupported(option.to_string())),
            other => {
                if let Some(flags) = propagation_flags(other) {
                    out.propagation.push(flags);
                } else {
                    out.data.push(other.to_string());
                }
                continue;
            }
        };
        if set {
            out.flags |= flag;
            out.cleared &= !flag;
        } else {
            out.flags &= !flag;
            out.cleared |= flag;
        }
    }
    Ok(out)
}

/// The flags of a propagation word ("rslave" → MS_SLAVE | MS_REC).
pub fn propagation_flags(word: &str) -> Option<MsFlags> {
    let (recursive, base) = match word.strip_prefix('r') {
        Some(base @ ("private" | "shared" | "slave" | "unbindable")) => (true, base),
        _ => (false, word),
    };
    let flag = match base {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(if recursive {
        flag | MsFlags::MS_REC
    } else {
        flag
    })
}

/// The spec's `linux.rootfsPropagation`.
pub fn rootfs_propagation(word: &str) -> Result<MsFlags, MountError> {
    propagation_flags(word).ok_or_else(|| MountError::BadPropagation(word.to_string()))
}

/// Checks a path given by the host: absolute, bounded, no NUL, no `..`.
pub fn check_path(what: &'static str, path: &Path) -> Result<(), MountError> {
    let text = path.to_string_lossy();
    if text.len() > MAX_PATH_LEN || text.contains('\0') {
        return Err(MountError::BadPath { what });
    }
    if !path.is_absolute() {
        return Err(MountError::NotAbsolute {
            what,
            path: text.into_owned(),
        });
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(MountError::DotDot {
            what,
            path: text.into_owned(),
        });
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSource {
    /// A bind mount of a guest path.
    Bind(PathBuf),
    /// A filesystem: its type and source string.
    Fs { fstype: String, source: String },
}

/// One entry of the spec's `mounts`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPlan {
    /// Absolute, inside the container.
    pub destination: PathBuf,
    pub source: MountSource,
    pub options: MountOptions,
}

fn valid_fstype(fstype: &str) -> bool {
    !fstype.is_empty()
        && fstype.len() <= 64
        && fstype
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Converts the spec's mounts.
pub fn plan_mounts(mounts: &[Mount]) -> Result<Vec<MountPlan>, MountError> {
    if mounts.len() > MAX_MOUNTS {
        return Err(MountError::TooMany(mounts.len()));
    }
    mounts.iter().map(plan_mount).collect()
}

fn plan_mount(mount: &Mount) -> Result<MountPlan, MountError> {
    let destination = mount.destination().clone();
    check_path("mount destination", &destination)?;
    let dest_text = destination.to_string_lossy().into_owned();
    let options = parse_options(mount.options().as_deref().unwrap_or(&[]))?;
    let fstype = mount.typ().clone().unwrap_or_default();
    let source = if options.bind || fstype == "bind" {
        let path = mount
            .source()
            .clone()
            .ok_or_else(|| MountError::NoSource(dest_text.clone()))?;
        check_path("bind mount source", &path)?;
        if !BIND_SOURCES.iter().any(|prefix| path.starts_with(prefix)) {
            return Err(MountError::BindSource(path.display().to_string()));
        }
        MountSource::Bind(path)
    } else {
        if fstype.is_empty() {
            return Err(MountError::NoType(dest_text));
        }
        if !valid_fstype(&fstype) {
            return Err(MountError::BadType {
                destination: dest_text,
                fstype,
            });
        }
        let source = mount
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| fstype.clone());
        if source.contains('\0') || source.len() > MAX_PATH_LEN {
            return Err(MountError::BadPath {
                what: "mount source",
            });
        }
        if fstype == "cgroup" || fstype == "cgroup2" {
            // The guest runs cgroup v2 only: a v1 "cgroup" mount becomes the unified
            // hierarchy, and v1 controller options mean nothing to it.
            let mut options = options;
            options.data.clear();
            return Ok(MountPlan {
                destination,
                source: MountSource::Fs {
                    fstype: "cgroup2".into(),
                    source: "cgroup2".into(),
                },
                options,
            });
        }
        MountSource::Fs { fstype, source }
    };
    Ok(MountPlan {
        destination,
        source,
        options,
    })
}

/// Device nodes every container with its own /dev gets, bind-mounted from the guest's.
pub const DEFAULT_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks every container with its own /dev gets: (link in /dev, target).
pub const DEFAULT_DEV_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// What path resolution needs from the filesystem.
pub trait Lookup {
    /// The target of `path` if it is a symlink; `None` if it is anything else or absent.
    fn read_link(&self, path: &Path) -> io::Result<Option<PathBuf>>;
}

/// The real filesystem.
pub struct RealFs;

impl Lookup for RealFs {
    fn read_link(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::read_link(path).map(Some),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[derive(Debug, Error)]
pub enum ResolveError {
    #[error("resolving {path:?} in the container: too many levels of symbolic links")]
    Loop { path: PathBuf },
    #[error("resolving {path:?} in the container: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Resolves `path` as if `root` were `/`: symlinks (absolute or relative) and `..` can never
/// lead outside `root`. Components that do not exist are kept as they are, so the result
/// is where a mount point will be created.
pub fn resolve_in_root(root: &Path, path: &Path, fs: &dyn Lookup) -> Result<PathBuf, ResolveError> {
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_front(&mut pending, path);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == "." || name.is_empty() {
            continue;
        }
        if name == ".." {
            resolved.pop(); // at the root, ".." is the root
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&name);
        match fs.read_link(&candidate) {
            Ok(Some(target)) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ResolveError::Loop {
                        path: path.to_path_buf(),
                    });
                }
                if target.is_absolute() {
                    resolved.clear();
                }
                push_front(&mut pending, &target);
            }
            Ok(None) => resolved.push(name),
            Err(source) => {
                return Err(ResolveError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// Puts the components of `path` in front of the queue, in order.
fn push_front(queue: &mut VecDeque<OsString>, path: &Path) {
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect();
    for part in parts.into_iter().rev() {
        queue.push_front(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;
    use std::collections::HashMap;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts = parse_options(&["nosuid", "nodev", "mode=755", "size=65536k"]).unwrap();
        assert_eq!(opts.flags, MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        assert_eq!(opts.data_string(), "mode=755,size=65536k");
        assert!(!opts.bind);

        let opts = parse_options(&["rbind", "ro", "rprivate"]).unwrap();
        assert!(opts.bind && opts.recursive);
        assert_eq!(opts.flags, MsFlags::MS_RDONLY);
        assert_eq!(
            opts.propagation,
            vec![MsFlags::MS_PRIVATE | MsFlags::MS_REC]
        );

        // Later words win; clearing words are remembered for remounts.
        let opts = parse_options(&["ro", "rw", "suid"]).unwrap();
        assert_eq!(opts.flags, MsFlags::empty());
        assert_eq!(opts.cleared, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
    }

    #[test]
    fn options_reject_smuggled_data() {
        assert_eq!(
            parse_options(&["mode=755,uid=0"]),
            Err(MountError::BadOption("mode=755,uid=0".into()))
        );
        assert!(matches!(
            parse_options(&["idmap"]),
            Err(MountError::Unsupported(_))
        ));
        let many = vec!["ro"; MAX_OPTIONS + 1];
        assert_eq!(
            parse_options(&many),
            Err(MountError::TooManyOptions(MAX_OPTIONS + 1))
        );
    }

    #[test]
    fn propagation_words() {
        assert_eq!(propagation_flags("slave"), Some(MsFlags::MS_SLAVE));
        assert_eq!(
            propagation_flags("runbindable"),
            Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC)
        );
        assert_eq!(propagation_flags("ro"), None);
        assert_eq!(propagation_flags("r"), None);
        assert!(rootfs_propagation("sideways").is_err());
    }

    fn mount(dest: &str, typ: Option<&str>, source: Option<&str>, options: &[&str]) -> Mount {
        let mut b = MountBuilder::default()
            .destination(dest)
            .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(s) = source {
            b = b.source(s);
        }
        b.build().unwrap()
    }

    #[test]
    fn spec_mounts_become_plans() {
        let plans = plan_mounts(&[
            mount("/proc", Some("proc"), Some("proc"), &[]),
            mount(
                "/data",
                Some("none"),
                Some("/run/ward/data"),
                &["rbind", "ro"],
            ),
            mount(
                "/sys/fs/cgroup",
                Some("cgroup"),
                Some("cgroup"),
                &["nosuid", "ro", "name=systemd"],
            ),
        ])
        .unwrap();
        assert_eq!(
            plans[0].source,
            MountSource::Fs {
                fstype: "proc".into(),
                source: "proc".into()
            }
        );
        assert_eq!(plans[1].source, MountSource::Bind("/run/ward/data".into()));
        assert!(plans[1].options.recursive);
        assert_eq!(
            plans[2].source,
            MountSource::Fs {
                fstype: "cgroup2".into(),
                source: "cgroup2".into()
            }
        );
        assert!(plans[2].options.data.is_empty());
        assert_eq!(
            plans[2].options.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_RDONLY
        );
    }

    #[test]
    fn spec_mounts_are_checked() {
        assert!(matches!(
            plan_mounts(&[mount("proc", Some("proc"), None, &[])]),
            Err(MountError::NotAbsolute { .. })
        ));
        assert!(matches!(
            plan_mounts(&[mount("/a/../../etc", Some("tmpfs"), None, &[])]),
            Err(MountError::DotDot { .. })
        ));
        assert!(matches!(
            plan_mounts(&[mount("/x", None, None, &[])]),
            Err(MountError::NoType(_))
        ));
        assert!(matches!(
            plan_mounts(&[mount("/x", Some("bind"), None, &[])]),
            Err(MountError::NoSource(_))
        ));
        assert!(matches!(
            plan_mounts(&[mount("/x", Some("tmp fs"), None, &[])]),
            Err(MountError::BadType { .. })
        ));
        assert!(matches!(
            plan_mounts(&[mount("/x", None, Some("rel/path"), &["bind"])]),
            Err(MountError::NotAbsolute { .. })
        ));
        for host_path in ["/etc/hosts", "/", "/proc/1/root", "/run/wardx"] {
            assert!(
                matches!(
                    plan_mounts(&[mount("/x", Some("bind"), Some(host_path), &[])]),
                    Err(MountError::BindSource(_))
                ),
                "{host_path}"
            );
        }
        assert!(plan_mounts(&[mount("/dev/fuse", Some("bind"), Some("/dev/fuse"), &[])]).is_ok());
    }

    /// A filesystem of symlinks only.
    struct Links(HashMap<PathBuf, PathBuf>);

    impl Lookup for Links {
        fn read_link(&self, path: &Path) -> io::Result<Option<PathBuf>> {
            Ok(self.0.get(path).cloned())
        }
    }

    #[test]
    fn resolution_stays_inside_the_root() {
        let fs = Links(HashMap::from([
            (PathBuf::from("/r/etc"), PathBuf::from("/")),
            (PathBuf::from("/r/up"), PathBuf::from("../../../..")),
            (PathBuf::from("/r/var/run"), PathBuf::from("../run")),
            (PathBuf::from("/r/loop"), PathBuf::from("/loop")),
        ]));
        let root = Path::new("/r");
        let resolve = |p: &str| resolve_in_root(root, Path::new(p), &fs).unwrap();
        assert_eq!(resolve("/etc/passwd"), PathBuf::from("/r/passwd"));
        assert_eq!(resolve("/up/x"), PathBuf::from("/r/x"));
        assert_eq!(resolve("/../../x"), PathBuf::from("/r/x"));
        assert_eq!(resolve("/var/run/y"), PathBuf::from("/r/run/y"));
        assert_eq!(resolve("/a/b"), PathBuf::from("/r/a/b"));
        assert_eq!(resolve("/"), PathBuf::from("/r"));
        assert!(matches!(
            resolve_in_root(root, Path::new("/loop"), &fs),
            Err(ResolveError::Loop { .. })
        ));
    }
}
