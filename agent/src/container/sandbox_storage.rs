//! The storages of a sandbox (a pod's shared directory): mounted once for all of its
//! containers, in use while any of them lives, unmounted with the last one.
//!
//! A container's own storages are claimed paths that no other container may touch; a
//! sandbox storage is the opposite, the one place every container of the pod reads its
//! rootfs and volumes from. So it is counted by user rather than claimed.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use super::storage::{self, StorageError, StoragePlan};

/// One mounted sandbox storage and the containers that use it.
struct Mounted {
    plan: StoragePlan,
    users: BTreeSet<String>,
}

#[derive(Default)]
pub struct SandboxStorages {
    mounted: HashMap<PathBuf, Mounted>,
}

impl SandboxStorages {
    /// Makes each storage available to `container`, mounting those not mounted yet. A
    /// mount point already holding a different storage is refused: two pods' shares must
    /// never be confused. On failure, nothing new stays mounted or counted.
    pub fn acquire(&mut self, container: &str, plans: &[StoragePlan]) -> Result<(), StorageError> {
        let mut done: Vec<PathBuf> = Vec::new();
        for plan in plans {
            let result = match self.mounted.get_mut(&plan.mount_point) {
                Some(existing) if existing.plan == *plan => {
                    existing.users.insert(container.to_string());
                    Ok(())
                }
                Some(_) => Err(StorageError::Conflict {
                    mount_point: plan.mount_point.display().to_string(),
                }),
                None => storage::mount(plan).map(|()| {
                    self.mounted.insert(
                        plan.mount_point.clone(),
                        Mounted {
                            plan: plan.clone(),
                            users: BTreeSet::from([container.to_string()]),
                        },
                    );
                }),
            };
            if let Err(e) = result {
                for path in done {
                    let _ = self.release_one(container, &path);
                }
                return Err(e);
            }
            done.push(plan.mount_point.clone());
        }
        Ok(())
    }

    /// Drops `container` from every storage it used; the storages no one uses any more
    /// are unmounted. Every storage is tried; the first failure is returned.
    pub fn release(&mut self, container: &str) -> Result<(), StorageError> {
        let used: Vec<PathBuf> = self
            .mounted
            .iter()
            .filter(|(_, m)| m.users.contains(container))
            .map(|(path, _)| path.clone())
            .collect();
        let mut first_error = None;
        for path in used {
            if let Err(e) = self.release_one(container, &path) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn release_one(&mut self, container: &str, path: &PathBuf) -> Result<(), StorageError> {
        let Some(mounted) = self.mounted.get_mut(path) else {
            return Ok(());
        };
        mounted.users.remove(container);
        if !mounted.users.is_empty() {
            return Ok(());
        }
        storage::unmount(path)?;
        self.mounted.remove(path);
        Ok(())
    }

    /// The containers using the storage at `path` (for tests and diagnostics).
    #[cfg(test)]
    fn users(&self, path: &str) -> Vec<String> {
        self.mounted
            .get(&PathBuf::from(path))
            .map(|m| m.users.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::mounts::parse_options;

    fn plan(tag: &str, mount_point: &str) -> StoragePlan {
        StoragePlan {
            source: tag.into(),
            fstype: "9p".into(),
            options: parse_options::<&str>(&[]).unwrap(),
            mount_point: mount_point.into(),
        }
    }

    /// Pre-fills the table as if a first container had mounted it, so the counting is
    /// tested without mounting anything.
    fn with_user(plan: &StoragePlan, user: &str) -> SandboxStorages {
        let mut storages = SandboxStorages::default();
        storages.mounted.insert(
            plan.mount_point.clone(),
            Mounted {
                plan: plan.clone(),
                users: BTreeSet::from([user.to_string()]),
            },
        );
        storages
    }

    #[test]
    fn a_second_container_shares_the_mounted_storage() {
        let shared = plan("ward-sandbox", "/run/ward/sandbox");
        let mut storages = with_user(&shared, "infra");
        storages
            .acquire("app", std::slice::from_ref(&shared))
            .unwrap();
        assert_eq!(storages.users("/run/ward/sandbox"), ["app", "infra"]);
        // The first to go leaves it mounted for the other.
        storages.release("infra").unwrap();
        assert_eq!(storages.users("/run/ward/sandbox"), ["app"]);
    }

    #[test]
    fn another_storage_on_the_same_mount_point_is_refused() {
        let shared = plan("ward-sandbox", "/run/ward/sandbox");
        let mut storages = with_user(&shared, "infra");
        let other = plan("other-pod", "/run/ward/sandbox");
        let err = storages.acquire("app", &[other]).unwrap_err();
        assert!(err.to_string().contains("/run/ward/sandbox"), "{err}");
        assert_eq!(storages.users("/run/ward/sandbox"), ["infra"]);
    }

    #[test]
    fn releasing_a_container_without_storages_is_harmless() {
        let mut storages = SandboxStorages::default();
        storages.release("nobody").unwrap();
    }
}
