//! Container state on disk, under `--root`: one directory per container holding
//! `state.json` (0600, replaced atomically: written to a temporary file, synced, renamed).
//! The directory is created with mkdir, which is atomic, so two `create`s of one ID cannot
//! both succeed. The VM's sockets, logs and shared directory are the sandbox's
//! (sandbox/store.rs).
//!
//! Every command that changes a container flocks `<id>~lock`, which lies beside the
//! directory, not in it: it must outlive `delete`, or a command that opened the lock file
//! of a directory being removed and one that creates the container again could each hold
//! "the" lock. `~` is not allowed in IDs, so no container directory can take that name.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;
use ward_agent_protocol::ids::{validate_id, IdError};

use super::state::ContainerState;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    #[error("container with id exists: {0}")]
    Exists(String),
    #[error("container \"{id}\": {action} {path}: {source}")]
    Io {
        id: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container \"{id}\": not removing {dir}: mounts remain below it: {mounts}")]
    Mounted {
        id: String,
        dir: PathBuf,
        mounts: String,
    },
    #[error("container \"{id}\": corrupt state file {path}: {message}")]
    Corrupt {
        id: String,
        path: PathBuf,
        message: String,
    },
}

/// The `--root` directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An exclusive hold on one container; released on drop.
pub struct ContainerLock {
    _flock: Flock<File>,
}

impl Store {
    pub fn new(root: PathBuf) -> Store {
        Store { root }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The `--root` directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("state.json")
    }

    fn lock_path(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}~lock"))
    }

    fn io(id: &str, action: &'static str, path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            id: id.to_string(),
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The IDs of every container under the root, sorted; none when the root is absent.
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io("", "listing", &self.root, e)),
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| validate_id(id).is_ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Claims `id`: locks it, then creates its directory (failing if it exists).
    pub fn claim(&self, id: &str) -> Result<ContainerLock, StoreError> {
        validate_id(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .map_err(|e| Self::io(id, "creating root directory", &self.root, e))?;
        let dir = self.dir(id);
        // Without waiting for a lock that the existing container's holder may keep long.
        if dir.exists() {
            return Err(StoreError::Exists(id.to_string()));
        }
        let lock = self.hold(id)?;
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => Ok(lock),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::Exists(id.to_string()))
            }
            Err(e) => Err(Self::io(id, "creating", &dir, e)),
        }
    }

    /// Waits for exclusive use of an existing container.
    pub fn lock(&self, id: &str) -> Result<ContainerLock, StoreError> {
        validate_id(id)?;
        let dir = self.dir(id);
        if !dir.is_dir() {
            return Err(StoreError::NotFound(id.to_string()));
        }
        let lock = self.hold(id)?;
        // The container may have been deleted while we waited for the lock.
        if !dir.is_dir() {
            return Err(StoreError::NotFound(id.to_string()));
        }
        Ok(lock)
    }

    /// Flocks the lock file of `id` (created 0600 if missing), waiting for it.
    fn hold(&self, id: &str) -> Result<ContainerLock, StoreError> {
        let path = self.lock_path(id);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| match e.kind() {
                // The root itself is gone: so is every container in it.
                std::io::ErrorKind::NotFound => StoreError::NotFound(id.to_string()),
                _ => Self::io(id, "opening", &path, e),
            })?;
        let flock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| Self::io(id, "locking", &path, errno.into()))?;
        Ok(ContainerLock { _flock: flock })
    }

    /// Reads a container's state; needs no lock, since writes are atomic renames.
    pub fn load(&self, id: &str) -> Result<ContainerState, StoreError> {
        validate_id(id)?;
        let path = self.state_path(id);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(id.to_string()))
            }
            Err(e) => return Err(Self::io(id, "reading", &path, e)),
        };
        serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
            id: id.to_string(),
            path,
            message: e.to_string(),
        })
    }

    /// Replaces the container's state; the caller holds its lock.
    pub fn save(&self, _lock: &ContainerLock, state: &ContainerState) -> Result<(), StoreError> {
        let id = &state.id;
        let path = self.state_path(id);
        let tmp = self.dir(id).join(".state.json.tmp");
        let text = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Corrupt {
            id: id.clone(),
            path: path.clone(),
            message: e.to_string(),
        })?;
        // 0600: the state names the bundle, the VM's processes and the guest's streams.
        replace_private(&tmp, &path, &text)
            .map_err(|(action, file, e)| Self::io(id, action, &file, e))
    }

    /// Removes the container's directory and everything in it. The lock file stays (see
    /// the module comment).
    pub fn remove(&self, _lock: ContainerLock, id: &str) -> Result<(), StoreError> {
        let dir = self.dir(id);
        // Removing recursively through a bind mount would delete the host's files.
        let mounted =
            crate::sandbox::shares::mounts_below(&dir).map_err(|e| StoreError::Mounted {
                id: id.to_string(),
                dir: dir.clone(),
                mounts: e.to_string(),
            })?;
        if !mounted.is_empty() {
            let mounts = mounted
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(StoreError::Mounted {
                id: id.to_string(),
                dir,
                mounts,
            });
        }
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(id, "removing", &dir, e)),
        }
    }
}

/// Replaces `path` with `text` as a whole (written to `tmp` first, synced, renamed over it),
/// readable by root only: both the container and the sandbox state files. An error names
/// what failed and on which file.
pub(crate) fn replace_private(
    tmp: &Path,
    path: &Path,
    text: &[u8],
) -> Result<(), (&'static str, PathBuf, std::io::Error)> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| ("creating", tmp.to_path_buf(), e))?;
    file.write_all(text)
        .and_then(|()| file.sync_all())
        .map_err(|e| ("writing", tmp.to_path_buf(), e))?;
    fs::rename(tmp, path).map_err(|e| ("renaming into", path.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::state::Status;

    fn sample(id: &str) -> ContainerState {
        ContainerState {
            id: id.into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: "now".into(),
            status: Status::Creating,
            annotations: Default::default(),
            sandbox: None,
            vm: None,
            relay: None,
            exec_relays: Vec::new(),
            exit_status: None,
            creator: None,
            hooks: None,
        }
    }

    #[test]
    fn claim_save_load_remove() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().join("ward"));
        let lock = store.claim("c1").unwrap();
        store.save(&lock, &sample("c1")).unwrap();
        assert_eq!(store.load("c1").unwrap(), sample("c1"));
        assert!(matches!(store.claim("c1"), Err(StoreError::Exists(_))));
        store.remove(lock, "c1").unwrap();
        assert!(matches!(store.load("c1"), Err(StoreError::NotFound(_))));
        assert!(matches!(store.lock("c1"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn state_is_private_and_the_lock_outlives_delete() {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::mpsc;
        use std::time::Duration;

        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().join("ward"));
        let lock = store.claim("c1").unwrap();
        store.save(&lock, &sample("c1")).unwrap();
        let mode = fs::metadata(store.state_path("c1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "state.json mode {mode:o}");
        let lock_mode = fs::metadata(store.lock_path("c1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(lock_mode & 0o777, 0o600, "lock mode {lock_mode:o}");

        // A command waiting for the lock while `delete` removes the directory, and a
        // `create` of the same ID right after: never two holders at once.
        let holders = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (done_tx, done_rx) = mpsc::channel();
        let hold = |holders: &std::sync::atomic::AtomicUsize| {
            use std::sync::atomic::Ordering;
            assert_eq!(
                holders.fetch_add(1, Ordering::SeqCst),
                0,
                "two lock holders"
            );
            std::thread::sleep(Duration::from_millis(50));
            holders.fetch_sub(1, Ordering::SeqCst);
        };
        let waiter = {
            let (store, holders, done) = (store.clone(), holders.clone(), done_tx.clone());
            std::thread::spawn(move || {
                if let Ok(lock) = store.lock("c1") {
                    hold(&holders);
                    drop(lock);
                }
                done.send(()).unwrap();
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        // `delete`: the directory goes while the lock is still held.
        fs::remove_dir_all(store.dir("c1")).unwrap();
        assert!(
            store.lock_path("c1").exists(),
            "the lock went with the directory"
        );
        let creator = {
            let (store, holders, done) = (store.clone(), holders.clone(), done_tx);
            std::thread::spawn(move || {
                let lock = store.claim("c1").expect("claiming c1 again");
                hold(&holders);
                drop(lock);
                done.send(()).unwrap();
            })
        };
        assert!(
            done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "a command got the lock while delete held it"
        );
        drop(lock);
        for _ in 0..2 {
            done_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("a command never got the lock");
        }
        waiter.join().unwrap();
        creator.join().unwrap();
        assert!(store.dir("c1").is_dir());
    }

    #[test]
    fn ids_lists_containers_only() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().join("absent"));
        assert!(store.ids().unwrap().is_empty());
        let store = Store::new(root.path().to_path_buf());
        drop(store.claim("b").unwrap());
        drop(store.claim("a").unwrap());
        fs::write(root.path().join("stray-file"), "").unwrap();
        assert_eq!(store.ids().unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn bad_ids_never_touch_the_disk() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().to_path_buf());
        for id in ["../x", "a/b", "..", ""] {
            assert!(
                matches!(store.claim(id), Err(StoreError::InvalidId(_))),
                "{id}"
            );
            assert!(
                matches!(store.load(id), Err(StoreError::InvalidId(_))),
                "{id}"
            );
        }
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn concurrent_writers_never_tear_the_file() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().to_path_buf());
        drop(store.claim("c").unwrap());
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let lock = store.lock("c").unwrap();
                        let mut s = sample("c");
                        s.created = format!("{n}-{i}");
                        store.save(&lock, &s).unwrap();
                        drop(lock);
                        store.load("c").unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
