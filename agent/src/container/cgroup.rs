//! The container's cgroup (v2, the guest's only hierarchy): where it lives, confined under
//! /sys/fs/cgroup whatever `linux.cgroupsPath` says; which interface files the spec's
//! resources become (pure, tested); and the file operations on it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use thiserror::Error;

/// Where the guest's cgroup2 hierarchy is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Parent of the cgroups the agent names itself.
const WARD_GROUP: &str = "ward";
/// Longest value accepted for `linux.resources.unified`.
const MAX_VALUE_LEN: usize = 4096;

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("cgroupsPath {0:?} contains '..'")]
    DotDot(String),
    #[error("cgroupsPath {0:?} is not a usable path")]
    BadPath(String),
    #[error("{what}: {value} is not a valid value")]
    BadValue { what: String, value: String },
    #[error("linux.resources.unified key {0:?} is not an interface file ward may write")]
    BadUnifiedKey(String),
    #[error("memory swap limit {swap} is below the memory limit {limit} (the spec's swap counts memory + swap)")]
    SwapBelowLimit { swap: i64, limit: i64 },
    #[error("cgroup {path}: {what}: {source}")]
    Io {
        path: String,
        what: String,
        source: io::Error,
    },
    #[error(transparent)]
    Devices(#[from] super::devcgroup::DevCgroupError),
    #[error("cgroup {path}: {message}")]
    DeviceProgram { path: String, message: String },
    #[error("cgroup {0} already exists and has processes")]
    InUse(String),
    #[error("cgroup {0}: processes are still in it after {1:?}")]
    NotEmpty(String, Duration),
    #[error("cgroup {path}: not {state} after {patience:?}")]
    FreezeTimeout {
        path: String,
        state: &'static str,
        patience: Duration,
    },
}

impl CgroupError {
    fn io(path: &Path, what: impl Into<String>, source: io::Error) -> CgroupError {
        CgroupError::Io {
            path: path.display().to_string(),
            what: what.into(),
            source,
        }
    }
}

/// The cgroup of a container, relative to [`CGROUP_ROOT`]: `linux.cgroupsPath` made safe, or
/// `ward/<id>` when it is absent or in systemd's `slice:prefix:name` form (there is no
/// systemd in the guest).
pub fn confine(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf, CgroupError> {
    let default = Path::new(WARD_GROUP).join(id);
    let Some(path) = cgroups_path else {
        return Ok(default);
    };
    let text = path.to_string_lossy();
    if text.is_empty() || (!path.is_absolute() && text.contains(':')) {
        return Ok(default);
    }
    if text.contains('\0') || text.len() > crate::container::mounts::MAX_PATH_LEN {
        return Err(CgroupError::BadPath(text.into_owned()));
    }
    // Relative paths are relative to the agent's own group of containers.
    let mut out = if path.is_absolute() {
        PathBuf::new()
    } else {
        PathBuf::from(WARD_GROUP)
    };
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => return Err(CgroupError::DotDot(text.into_owned())),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if out.as_os_str().is_empty() || out == Path::new(WARD_GROUP) {
        // The root (the agent's own) or the parent of every container: never one container's.
        return Err(CgroupError::BadPath(text.into_owned()));
    }
    Ok(out)
}

/// Converts cgroup v1 cpu.shares (2..262144) to v2 cpu.weight (1..10000), the formula runc
/// and crun use.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The interface files to write and the spec's resources nobody will enforce.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResourcePlan {
    pub writes: Vec<(String, String)>,
    /// `devices` as a device program's rules; None when they deny nothing.
    pub devices: Option<Vec<super::devcgroup::Rule>>,
    pub ignored: Vec<&'static str>,
}

fn limit_value(value: i64) -> String {
    if value < 0 {
        "max".into()
    } else {
        value.to_string()
    }
}

fn check_cpu_list(what: &str, value: &str) -> Result<(), CgroupError> {
    if value.is_empty()
        || value.len() > 1024
        || !value
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
    {
        return Err(CgroupError::BadValue {
            what: what.into(),
            value: value.chars().take(64).collect(),
        });
    }
    Ok(())
}

/// The cgroup v2 file of the swap limit.
const SWAP_MAX: &str = "memory.swap.max";

pub fn resource_plan(res: &LinuxResources) -> Result<ResourcePlan, CgroupError> {
    let mut plan = ResourcePlan::default();
    let mut write = |file: &str, value: String| plan.writes.push((file.to_string(), value));

    if let Some(memory) = res.memory() {
        // 0 means "not set" in specs written by engines; -1 means unlimited.
        let limit = memory.limit().filter(|l| *l != 0);
        if let Some(limit) = limit {
            write("memory.max", limit_value(limit));
        }
        if let Some(low) = memory.reservation().filter(|l| *l != 0) {
            write("memory.low", limit_value(low));
        }
        if let Some(swap) = memory.swap().filter(|s| *s != 0) {
            let value = match (swap, limit) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l > 0 => {
                    if s < l {
                        return Err(CgroupError::SwapBelowLimit { swap: s, limit: l });
                    }
                    (s - l).to_string()
                }
                (s, _) => s.to_string(),
            };
            write(SWAP_MAX, value);
        }
    }
    if let Some(cpu) = res.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            write("cpu.weight", shares_to_weight(shares).to_string());
        }
        let quota = cpu.quota().filter(|q| *q != 0);
        let period = cpu.period().filter(|p| *p != 0);
        if quota.is_some() || period.is_some() {
            let quota = match quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            write("cpu.max", format!("{quota} {}", period.unwrap_or(100_000)));
        }
        if let Some(idle) = cpu.idle() {
            write("cpu.idle", idle.to_string());
        }
        if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
            check_cpu_list("linux.resources.cpu.cpus", cpus)?;
            write("cpuset.cpus", cpus.to_string());
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
            check_cpu_list("linux.resources.cpu.mems", mems)?;
            write("cpuset.mems", mems.to_string());
        }
    }
    if let Some(pids) = res.pids() {
        write(
            "pids.max",
            limit_value(if pids.limit() <= 0 { -1 } else { pids.limit() }),
        );
    }
    if let Some(unified) = res.unified() {
        let mut keys: Vec<&String> = unified.keys().collect();
        keys.sort(); // a stable order for the log and the tests
        for key in keys {
            let value = &unified[key];
            let valid_key = key.contains('.')
                && !key.starts_with("cgroup.")
                && key.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'
                });
            if !valid_key {
                return Err(CgroupError::BadUnifiedKey(key.clone()));
            }
            if value.len() > MAX_VALUE_LEN || value.contains('\0') {
                return Err(CgroupError::BadValue {
                    what: format!("linux.resources.unified.{key}"),
                    value: value.chars().take(64).collect(),
                });
            }
            write(key, value.clone());
        }
    }
    if res.block_io().is_some() {
        plan.ignored.push("blockIO");
    }
    if res.hugepage_limits().is_some() {
        plan.ignored.push("hugepageLimits");
    }
    if res.network().is_some() {
        plan.ignored.push("network");
    }
    if res.rdma().is_some() {
        plan.ignored.push("rdma");
    }
    plan.devices = super::devcgroup::rules(res.devices().as_deref().unwrap_or(&[]))?;
    Ok(plan)
}

/// Enables in `dir`'s subtree every controller `dir` has. Returns the controllers that
/// could not be enabled, with why (the caller logs them: a missing controller weakens
/// limits but must not stop the guest).
pub fn enable_controllers(dir: &Path) -> Vec<(String, io::Error)> {
    let mut failed = Vec::new();
    let available = match fs::read_to_string(dir.join("cgroup.controllers")) {
        Ok(text) => text,
        Err(e) => {
            failed.push(("cgroup.controllers".to_string(), e));
            return failed;
        }
    };
    for controller in available.split_whitespace() {
        // One write per controller: one that cannot be enabled does not stop the others.
        if let Err(e) = fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}")) {
            failed.push((controller.to_string(), e));
        }
    }
    failed
}

/// "key value" lines, as in cpu.stat and memory.stat; lines that do not parse are skipped.
pub fn parse_flat_keyed(text: &str) -> std::collections::HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A single-value interface file: a number, or "max" (returned as 0, meaning no limit).
pub fn parse_single(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => Some(0),
        other => other.parse().ok(),
    }
}

/// The `frozen` field of a cgroup.events file.
pub fn parse_frozen(events: &str) -> Option<bool> {
    events.lines().find_map(|line| match line.split_once(' ') {
        Some(("frozen", "1")) => Some(true),
        Some(("frozen", "0")) => Some(false),
        _ => None,
    })
}

/// A container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    /// Creates the cgroup `relative` (under [`CGROUP_ROOT`]) and its missing parents, with
    /// every controller enabled on the way down. An existing cgroup is reused if empty.
    pub fn create(relative: &Path) -> Result<Cgroup, CgroupError> {
        let mut dir = PathBuf::from(CGROUP_ROOT);
        let parts: Vec<_> = relative.components().collect();
        for (i, part) in parts.iter().enumerate() {
            // Controllers must be on in the parent before the child can use them; failures
            // are tolerated here and show up as a failed limit write below.
            let _ = enable_controllers(&dir);
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if i + 1 == parts.len() {
                        let cgroup = Cgroup { path: dir.clone() };
                        if !cgroup.pids()?.is_empty() {
                            return Err(CgroupError::InUse(dir.display().to_string()));
                        }
                    }
                }
                Err(e) => return Err(CgroupError::io(&dir, "creating it", e)),
            }
        }
        Ok(Cgroup { path: dir })
    }

    pub fn apply(&self, plan: &ResourcePlan) -> Result<(), CgroupError> {
        for (file, value) in &plan.writes {
            // ward's guest kernel has no swap (CONFIG_SWAP off), so it has no swap files
            // either: a swap limit holds by itself there. Engines send one with every
            // memory limit where the host accounts swap (docker run -m).
            if file == SWAP_MAX && !self.path.join(file).exists() {
                continue;
            }
            fs::write(self.path.join(file), value).map_err(|e| {
                CgroupError::io(&self.path, format!("writing {value:?} to {file}"), e)
            })?;
        }
        Ok(())
    }

    /// Attaches the device rules' program. Once per cgroup: a second program would only
    /// narrow the first (every attached program must allow), so updates leave them be.
    pub fn restrict_devices(&self, plan: &ResourcePlan) -> Result<(), CgroupError> {
        let Some(rules) = &plan.devices else {
            return Ok(());
        };
        let program = super::devcgroup::program(rules);
        super::devcgroup::attach(&self.path, &program).map_err(|message| {
            CgroupError::DeviceProgram {
                path: self.path.display().to_string(),
                message,
            }
        })
    }

    /// cgroup.procs opened for writing, close-on-exec: a child writes "0" to it to move
    /// itself in.
    pub fn procs_for_join(&self) -> Result<File, CgroupError> {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(self.path.join("cgroup.procs"))
            .map_err(|e| CgroupError::io(&self.path, "opening cgroup.procs", e))
    }

    /// The PIDs in the cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let text = fs::read_to_string(self.path.join("cgroup.procs"))
            .map_err(|e| CgroupError::io(&self.path, "reading cgroup.procs", e))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Sends `signal` to every process in the cgroup. SIGKILL goes through cgroup.kill
    /// (atomic: nothing forks its way out) where the kernel has it.
    pub fn signal_all(&self, signal: i32) -> Result<(), CgroupError> {
        if signal == libc::SIGKILL && fs::write(self.path.join("cgroup.kill"), "1").is_ok() {
            return Ok(());
        }
        for pid in self.pids()? {
            // SAFETY: kill has no memory arguments; a PID that vanished meanwhile gives
            // ESRCH, which is what we wanted anyway.
            unsafe { libc::kill(pid, signal) };
        }
        Ok(())
    }

    /// The text of one interface file, empty when the controller does not provide it.
    pub fn read(&self, file: &str) -> String {
        fs::read_to_string(self.path.join(file)).unwrap_or_default()
    }

    /// Freezes or thaws every process in the cgroup and waits until the kernel reports the
    /// new state in cgroup.events (a freeze completes only once each task has stopped).
    pub fn set_frozen(&self, frozen: bool, patience: Duration) -> Result<(), CgroupError> {
        let value = if frozen { "1" } else { "0" };
        fs::write(self.path.join("cgroup.freeze"), value).map_err(|e| {
            CgroupError::io(&self.path, format!("writing {value} to cgroup.freeze"), e)
        })?;
        let deadline = Instant::now() + patience;
        loop {
            let events = fs::read_to_string(self.path.join("cgroup.events"))
                .map_err(|e| CgroupError::io(&self.path, "reading cgroup.events", e))?;
            if parse_frozen(&events) == Some(frozen) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::FreezeTimeout {
                    path: self.path.display().to_string(),
                    state: if frozen { "frozen" } else { "thawed" },
                    patience,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Removes the (empty) cgroup, waiting up to `patience` for dying processes to leave.
    pub fn remove(&self, patience: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + patience;
        loop {
            match fs::remove_dir(&self.path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    if Instant::now() >= deadline {
                        return Err(CgroupError::NotEmpty(
                            self.path.display().to_string(),
                            patience,
                        ));
                    }
                    let _ = self.signal_all(libc::SIGKILL);
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(CgroupError::io(&self.path, "removing it", e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_swap_limit_is_skipped_where_the_kernel_has_no_swap() {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = Cgroup {
            path: dir.path().to_path_buf(),
        };
        let plan = resource_plan(&resources(r#"{"memory": {"limit": 100, "swap": 200}}"#)).unwrap();
        cgroup.apply(&plan).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("memory.max")).unwrap(),
            "100"
        );
        assert!(!dir.path().join(SWAP_MAX).exists());
    }

    #[test]
    fn stat_files_parse() {
        let cpu =
            super::parse_flat_keyed("usage_usec 120\nuser_usec 100\nsystem_usec 20\nbad line\n");
        assert_eq!(cpu["usage_usec"], 120);
        assert_eq!(cpu.len(), 3);
        assert_eq!(super::parse_single("max\n"), Some(0));
        assert_eq!(super::parse_single("4096\n"), Some(4096));
        assert_eq!(super::parse_single(""), None);
    }

    #[test]
    fn frozen_state_is_read_from_cgroup_events() {
        assert_eq!(super::parse_frozen("populated 1\nfrozen 1\n"), Some(true));
        assert_eq!(super::parse_frozen("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(super::parse_frozen("populated 1\n"), None);
    }

    use super::*;

    #[test]
    fn paths_stay_under_the_hierarchy() {
        assert_eq!(confine(None, "web").unwrap(), PathBuf::from("ward/web"));
        assert_eq!(
            confine(Some(Path::new("/kubepods/pod1/ctr")), "web").unwrap(),
            PathBuf::from("kubepods/pod1/ctr")
        );
        assert_eq!(
            confine(Some(Path::new("mine/x")), "web").unwrap(),
            PathBuf::from("ward/mine/x")
        );
        assert_eq!(
            confine(Some(Path::new("machine.slice:libpod:abc")), "web").unwrap(),
            PathBuf::from("ward/web")
        );
        assert_eq!(
            confine(Some(Path::new("//a/./b/")), "web").unwrap(),
            PathBuf::from("a/b")
        );
        assert!(matches!(
            confine(Some(Path::new("/a/../../etc")), "web"),
            Err(CgroupError::DotDot(_))
        ));
        assert!(matches!(
            confine(Some(Path::new("/")), "web"),
            Err(CgroupError::BadPath(_))
        ));
        assert!(matches!(
            confine(Some(Path::new("/ward")), "web"),
            Err(CgroupError::BadPath(_))
        ));
    }

    fn resources(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    fn writes(plan: &ResourcePlan) -> Vec<(&str, &str)> {
        plan.writes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn resources_become_interface_files() {
        let plan = resource_plan(&resources(
            r#"{
                "memory": {"limit": 268435456, "swap": 536870912, "reservation": -1},
                "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1"},
                "pids": {"limit": 100},
                "unified": {"memory.high": "200M"}
            }"#,
        ))
        .unwrap();
        assert_eq!(
            writes(&plan),
            vec![
                ("memory.max", "268435456"),
                ("memory.low", "max"),
                ("memory.swap.max", "268435456"),
                ("cpu.weight", "39"),
                ("cpu.max", "50000 100000"),
                ("cpuset.cpus", "0-1"),
                ("pids.max", "100"),
                ("memory.high", "200M"),
            ]
        );
        assert!(plan.ignored.is_empty());
    }

    #[test]
    fn unlimited_and_unset_values() {
        let plan = resource_plan(&resources(
            r#"{"memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1}, "pids": {"limit": 0},
                "devices": [{"allow": false, "access": "rwm"}]}"#,
        ))
        .unwrap();
        assert_eq!(
            writes(&plan),
            vec![
                ("memory.max", "max"),
                ("memory.swap.max", "max"),
                ("cpu.max", "max 100000"),
                ("pids.max", "max"),
            ]
        );
        // A deny-all device rule is a device program.
        assert!(plan.ignored.is_empty());
        assert!(plan.devices.is_some());
        assert!(resource_plan(&resources("{}")).unwrap().writes.is_empty());
    }

    #[test]
    fn bad_resources_are_refused() {
        assert!(matches!(
            resource_plan(&resources(r#"{"unified": {"cgroup.procs": "1"}}"#)),
            Err(CgroupError::BadUnifiedKey(_))
        ));
        assert!(matches!(
            resource_plan(&resources(r#"{"unified": {"../x": "1"}}"#)),
            Err(CgroupError::BadUnifiedKey(_))
        ));
        assert!(matches!(
            resource_plan(&resources(r#"{"cpu": {"cpus": "0;reboot"}}"#)),
            Err(CgroupError::BadValue { .. })
        ));
        assert!(matches!(
            resource_plan(&resources(r#"{"memory": {"limit": 100, "swap": 50}}"#)),
            Err(CgroupError::SwapBelowLimit { .. })
        ));
        let plan = resource_plan(&resources(r#"{"blockIO": {"weight": 10}}"#)).unwrap();
        assert_eq!(plan.ignored, vec!["blockIO"]);
    }

    #[test]
    fn shares_map_to_weights() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(1), 1);
    }
}
