//! Sandboxes on disk: one directory per sandbox (one VM, one pod) under a fixed short base,
//! apart from the containers' state under `--root`.
//!
//! The directory holds `sandbox.json` (the VM and the member containers), `vm/` (the VM's
//! sockets and console) and `shared/` (the directory the VM exports). Its name is a hash of
//! the `--root` and the sandbox ID, so no path ward builds depends on how long an ID is or
//! how deep `--root` lies: containerd's 64-hex IDs under /run/containerd/runc/k8s.io get
//! the same 16-hex directory as `ward run x`, and sockets always fit sockaddr_un.
//!
//! The lock file lies beside the directory, not in it: it must outlive the directory's
//! removal, or two commands racing on a deleted sandbox could each hold "the" lock.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use ward_hypervisor::VmInstance;

use super::sizing::Size;
use crate::container::store::replace_private;

/// Where sandbox directories live. Short on purpose: see the module comment.
pub const SANDBOX_BASE: &str = "/run/ward-sandboxes";

#[derive(Debug, Error)]
pub enum SandboxStoreError {
    #[error("sandbox \"{0}\" does not exist (no container created it, or it was deleted)")]
    NotFound(String),
    #[error("sandbox \"{0}\" already exists")]
    Exists(String),
    #[error("sandbox \"{id}\": {action} {path}: {source}")]
    Io {
        id: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sandbox \"{id}\": corrupt state file {path}: {message}")]
    Corrupt {
        id: String,
        path: PathBuf,
        message: String,
    },
}

/// What ward remembers about one sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxState {
    pub id: String,
    /// The `--root` of its containers (the key of its directory, with the ID).
    pub root: PathBuf,
    /// The VM, once launched.
    #[serde(default)]
    pub vm: Option<VmInstance>,
    /// The containers living in it, in the order they joined; the first is the sandbox
    /// container, whose namespaces the others join.
    #[serde(default)]
    pub containers: Vec<String>,
    /// The VM's size at boot (the defaults and the sandbox's own limits).
    #[serde(default)]
    pub base: Size,
    /// What each container that joined later added by hotplug.
    #[serde(default)]
    pub added: std::collections::BTreeMap<String, Size>,
    /// The disks hot-added for each container (their IDs), removed with it.
    #[serde(default)]
    pub disks: std::collections::BTreeMap<String, Vec<String>>,
    /// The host cgroup of the VM's processes, once made; removed with the sandbox.
    #[serde(default)]
    pub host_cgroup: Option<super::host_cgroup::HostCgroup>,
    /// The pod's network namespace and the interfaces carried from it, once carried.
    #[serde(default)]
    pub network: Option<crate::network::NetworkRecord>,
    /// Members that brought a network namespace of their own, by container ID.
    #[serde(default)]
    pub member_networks: std::collections::BTreeMap<String, super::member_network::MemberNetwork>,
    /// The last serial given to a hot-added NIC or a member's guest namespace.
    #[serde(default)]
    pub serial: u32,
}

impl SandboxState {
    /// The container whose namespaces the pod's other containers join.
    pub fn sandbox_container(&self) -> Option<&str> {
        self.containers.first().map(String::as_str)
    }
}

/// An exclusive hold on one sandbox; released on drop.
pub struct SandboxLock {
    _flock: Flock<File>,
}

/// The sandboxes of one `--root`.
#[derive(Debug, Clone)]
pub struct SandboxStore {
    base: PathBuf,
    root: PathBuf,
}

/// FNV-1a, 64 bits: stable across builds and releases (unlike std's hasher), which the
/// directory names must be, since a later `ward` finds a sandbox by recomputing its name.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A short stable name for `text` (8 hex digits), for names with a length limit.
pub fn short_name(text: &str) -> String {
    format!("{:08x}", fnv1a64(text.as_bytes()) as u32)
}

impl SandboxStore {
    pub fn new(root: &Path) -> SandboxStore {
        SandboxStore::with_base(Path::new(SANDBOX_BASE), root)
    }

    pub fn with_base(base: &Path, root: &Path) -> SandboxStore {
        SandboxStore {
            base: base.to_path_buf(),
            root: root.to_path_buf(),
        }
    }

    fn key(&self, id: &str) -> String {
        use std::os::unix::ffi::OsStrExt;
        let mut bytes = self.root.as_os_str().as_bytes().to_vec();
        bytes.push(0);
        bytes.extend_from_slice(id.as_bytes());
        format!("{:016x}", fnv1a64(&bytes))
    }

    /// The sandbox's directory: `<base>/<16 hex>`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.base.join(self.key(id))
    }

    /// The VM's run directory: its sockets and console.
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.dir(id).join("vm")
    }

    /// Where host device nodes for the VM's disks are made.
    pub fn device_dir(&self, id: &str) -> PathBuf {
        self.dir(id).join("dev")
    }

    /// The directory the VM exports to the guest.
    pub fn shared_dir(&self, id: &str) -> PathBuf {
        self.dir(id).join("shared")
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("sandbox.json")
    }

    fn lock_path(&self, id: &str) -> PathBuf {
        self.base.join(format!("{}.lock", self.key(id)))
    }

    fn io(
        id: &str,
        action: &'static str,
        path: &Path,
        source: std::io::Error,
    ) -> SandboxStoreError {
        SandboxStoreError::Io {
            id: id.to_string(),
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Waits for exclusive use of sandbox `id`, existing or not.
    pub fn lock(&self, id: &str) -> Result<SandboxLock, SandboxStoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.base)
            .map_err(|e| Self::io(id, "creating", &self.base, e))?;
        let path = self.lock_path(id);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Self::io(id, "opening", &path, e))?;
        let flock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| Self::io(id, "locking", &path, errno.into()))?;
        Ok(SandboxLock { _flock: flock })
    }

    /// Creates the directory of a new sandbox; the caller holds its lock.
    pub fn create(&self, _lock: &SandboxLock, id: &str) -> Result<SandboxState, SandboxStoreError> {
        let dir = self.dir(id);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SandboxStoreError::Exists(id.to_string()))
            }
            Err(e) => return Err(Self::io(id, "creating", &dir, e)),
        }
        for sub in [self.vm_dir(id), self.shared_dir(id)] {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&sub)
                .map_err(|e| Self::io(id, "creating", &sub, e))?;
        }
        Ok(SandboxState {
            id: id.to_string(),
            root: self.root.clone(),
            vm: None,
            containers: Vec::new(),
            base: Size::default(),
            added: Default::default(),
            disks: Default::default(),
            host_cgroup: None,
            network: None,
            member_networks: Default::default(),
            serial: 0,
        })
    }

    pub fn load(&self, id: &str) -> Result<SandboxState, SandboxStoreError> {
        let path = self.state_path(id);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SandboxStoreError::NotFound(id.to_string()))
            }
            Err(e) => return Err(Self::io(id, "reading", &path, e)),
        };
        let state: SandboxState =
            serde_json::from_slice(&text).map_err(|e| SandboxStoreError::Corrupt {
                id: id.to_string(),
                path: path.clone(),
                message: e.to_string(),
            })?;
        // A hash collision, or a file from elsewhere, must not pass for this sandbox.
        if state.id != id || state.root != self.root {
            return Err(SandboxStoreError::Corrupt {
                id: id.to_string(),
                path,
                message: format!(
                    "it describes sandbox {:?} of root {}",
                    state.id,
                    state.root.display()
                ),
            });
        }
        Ok(state)
    }

    /// Replaces the sandbox's state (0600, atomically); the caller holds its lock.
    pub fn save(&self, _lock: &SandboxLock, state: &SandboxState) -> Result<(), SandboxStoreError> {
        let id = &state.id;
        let path = self.state_path(id);
        let tmp = self.dir(id).join(".sandbox.json.tmp");
        let text = serde_json::to_vec_pretty(state).map_err(|e| SandboxStoreError::Corrupt {
            id: id.clone(),
            path: path.clone(),
            message: e.to_string(),
        })?;
        replace_private(&tmp, &path, &text)
            .map_err(|(action, file, e)| Self::io(id, action, &file, e))
    }

    /// Removes the sandbox's directory; the caller has released every mount below it.
    /// The lock file stays (see the module comment).
    pub fn remove(&self, _lock: &SandboxLock, id: &str) -> Result<(), SandboxStoreError> {
        let dir = self.dir(id);
        let mounted = crate::sandbox::shares::mounts_below(&dir).unwrap_or_default();
        if let Some(mount) = mounted.first() {
            // Removing recursively through a bind mount would delete the host's files.
            return Err(Self::io(
                id,
                "not removing (a mount remains below it)",
                mount,
                std::io::Error::from(std::io::ErrorKind::ResourceBusy),
            ));
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(id, "removing", &dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_do_not_grow_with_the_id_or_the_root() {
        let base = Path::new("/run/ward-sandboxes");
        let deep = Path::new("/run/containerd/runc/k8s.io/and/then/some/more/levels");
        let long_id = "a".repeat(64);
        let short = SandboxStore::with_base(base, Path::new("/run/ward")).vm_dir("x");
        let long = SandboxStore::with_base(base, deep).vm_dir(&long_id);
        assert_eq!(short.as_os_str().len(), long.as_os_str().len());
        // The longest socket a backend puts there, plus vsock's `_<port>`, fits in 107.
        assert!(
            long.join("vhost-user-vsock.sock_1073741824")
                .as_os_str()
                .len()
                <= 107
        );
    }

    #[test]
    fn roots_and_ids_get_different_directories() {
        let base = Path::new("/b");
        let a = SandboxStore::with_base(base, Path::new("/r1"));
        let b = SandboxStore::with_base(base, Path::new("/r2"));
        assert_ne!(a.dir("x"), b.dir("x"));
        assert_ne!(a.dir("x"), a.dir("y"));
        assert_eq!(
            a.dir("x"),
            SandboxStore::with_base(base, Path::new("/r1")).dir("x")
        );
    }

    #[test]
    fn create_save_load_remove_and_the_lock_outlives_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SandboxStore::with_base(tmp.path(), Path::new("/root-a"));
        let lock = store.lock("pod").unwrap();
        let mut state = store.create(&lock, "pod").unwrap();
        assert!(matches!(
            store.create(&lock, "pod"),
            Err(SandboxStoreError::Exists(_))
        ));
        state.containers.push("pod".into());
        store.save(&lock, &state).unwrap();
        assert_eq!(store.load("pod").unwrap(), state);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(store.state_path("pod"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        store.remove(&lock, "pod").unwrap();
        assert!(matches!(
            store.load("pod"),
            Err(SandboxStoreError::NotFound(_))
        ));
        assert!(store.lock_path("pod").exists());
    }

    #[test]
    fn a_state_file_of_another_sandbox_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let a = SandboxStore::with_base(tmp.path(), Path::new("/root-a"));
        let lock = a.lock("pod").unwrap();
        let mut state = a.create(&lock, "pod").unwrap();
        state.root = "/elsewhere".into();
        a.save(&lock, &state).unwrap();
        assert!(matches!(
            a.load("pod"),
            Err(SandboxStoreError::Corrupt { .. })
        ));
    }
}
