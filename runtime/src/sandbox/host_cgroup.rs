//! The sandbox's host cgroup (issue 14): every host process its VM is made of (QEMU or
//! ward-vmm, virtiofsd, vhost-device-vsock and its watcher, QEMU's console keeper) runs in
//! one cgroup with limits sized from the VM, so a guest that drives its VMM hard (memory,
//! threads, CPU) is bounded on the host as a runc container would be.
//!
//! - **Where.** The sandbox container's `linux.cgroupsPath` when its engine gives one, read
//!   as runc reads it: `/parent/name` (cgroupfs driver: podman's
//!   `/libpod_parent/libpod-<id>`, containerd's `/<namespace>/<id>`), or `slice:prefix:name`
//!   (systemd driver: `<slice's path>/<prefix>-<name>.scope`). ward's own otherwise:
//!   `/ward/<sandbox ID>`. The path is the same below every hierarchy's root.
//! - **How.** By writing the cgroup file system directly, with no systemd D-Bus: the
//!   systemd form is only interpreted as the path systemd would give the scope, and ward
//!   makes that directory itself. On a host where systemd manages the cgroup tree, the
//!   engine should use cgroupfs paths with ward (as with runc's cgroupfs driver), or accept
//!   a scope directory systemd does not know about.
//! - **Which hierarchies.** cgroup v2 when `/sys/fs/cgroup/cgroup.controllers` exists (the
//!   `memory`, `cpu` and `pids` controllers, enabled down the path in each parent's
//!   `cgroup.subtree_control`); otherwise v1's `memory`, `cpu`, `cpuacct` (accounting
//!   only) and `pids` hierarchies, those that are mounted (hybrid hosts keep v2 at
//!   `/sys/fs/cgroup/unified` without controllers: it is not used).
//! - **Joining.** The runtime only creates the directories and writes the limits; the
//!   processes join before they run anything (hypervisor/src/jail/cgroup.rs).
//! - **Removal.** With the sandbox: its directories, and then the parents that this
//!   sandbox made (`/ward`, a containerd namespace's directory, slices), each only if it
//!   is empty by then; parents that were there before (podman's `/libpod_parent`) stay,
//!   and so does a parent another sandbox still uses (rmdir refuses a non-empty one). A
//!   sandbox made at the moment its parent goes makes the parent again (see
//!   `make_dirs`).

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The parent of the cgroups ward makes for sandboxes whose engine names none.
pub const OWN_PARENT: &str = "/ward";

/// v1 hierarchies a sandbox's cgroup is made in. cpuacct only counts (co-mounted with cpu
/// on most hosts, apart on some); cpuset is left alone: a new cpuset cgroup starts with no
/// CPUs and no memory nodes, and pinning is not what these limits are about.
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];
/// v2 controllers enabled for it.
const V2_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

const MIB: u64 = 1024 * 1024;

/// Memory the VM's host processes use beyond the guest's RAM, MiB. QEMU under TCG keeps a
/// translation cache for guest code (it reserves up to 1 GiB, and fills a few tens of MiB
/// for ward's small guests; a workload running much new code fills more), plus its own
/// heap, the 9p server's buffers, vhost-device-vsock's queues, virtiofsd's, and the page
/// cache of files read through the shared directory (reclaimable, but charged here). 512
/// MiB covers all of them with room to spare, so that the limit only stops a VMM that runs
/// away, never a working one.
pub const OVERHEAD_MIB: u64 = 512;
/// The CFS period of the CPU limit, microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// CPUs' worth of time beyond one per vCPU: the VMM's own threads (I/O, 9p or virtio-fs,
/// vsock) run besides the vCPUs.
pub const EXTRA_CPUS: u64 = 1;
/// Tasks (threads count) beyond [`PIDS_PER_VCPU`] per vCPU: QEMU's main loop, RCU and
/// worker pool (up to 64 threads), the helpers' threads. A bound against a runaway fork or
/// thread loop, far above what a working VM uses (about 20 under TCG).
pub const PIDS_BASE: u64 = 1024;
/// Tasks per vCPU (the vCPU thread, and what TCG's multi-threaded mode adds per CPU).
pub const PIDS_PER_VCPU: u64 = 4;

/// How long removal waits for the last processes to leave (they may still be exiting
/// after SIGKILL).
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum HostCgroupError {
    #[error("linux.cgroupsPath {path:?}: {reason}")]
    BadPath { path: String, reason: String },
    #[error("host cgroup: {action} {path}: {source}")]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host cgroup: no hierarchy to make the sandbox's cgroup in under {0} (neither cgroup v2 nor any of v1's memory, cpu, cpuacct and pids controllers is mounted there)")]
    NoHierarchy(PathBuf),
    #[error("host cgroup {dir} still holds processes {pids} after {secs} s; it stays behind")]
    Busy {
        dir: PathBuf,
        pids: String,
        secs: u64,
    },
}

fn io(action: impl Into<String>, path: &Path, source: std::io::Error) -> HostCgroupError {
    HostCgroupError::Io {
        action: action.into(),
        path: path.to_path_buf(),
        source,
    }
}

fn bad(path: &str, reason: impl Into<String>) -> HostCgroupError {
    HostCgroupError::BadPath {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// The cgroup's path below each hierarchy's root for a sandbox: from the sandbox
/// container's `linux.cgroupsPath`, or ward's own when it has none.
pub fn sandbox_path(
    cgroups_path: Option<&Path>,
    sandbox_id: &str,
) -> Result<PathBuf, HostCgroupError> {
    match cgroups_path {
        Some(path) if !path.as_os_str().is_empty() => {
            let text = path
                .to_str()
                .ok_or_else(|| bad(&path.to_string_lossy(), "not UTF-8"))?;
            parse_cgroups_path(text)
        }
        _ => parse_cgroups_path(&format!("{OWN_PARENT}/{sandbox_id}")),
    }
}

/// Reads a `linux.cgroupsPath` as runc does: `/a/b` is a path below each hierarchy's
/// root (cgroupfs driver); `slice:prefix:name` is systemd's unit `prefix-name.scope` in
/// `slice` (an empty slice is `system.slice`), whose directory is the slice's path
/// (`a-b.slice` lies in `a.slice`) and the unit. Components `..`, relative paths and the
/// root cgroup itself are refused: the result always names a cgroup strictly below the
/// roots.
pub fn parse_cgroups_path(text: &str) -> Result<PathBuf, HostCgroupError> {
    if text.contains('\0') {
        return Err(bad(text, "contains a NUL byte"));
    }
    let path = if text.starts_with('/') {
        text.to_string()
    } else if text.contains(':') {
        systemd_path(text)?
    } else {
        return Err(bad(
            text,
            "must be absolute (/parent/name, as for runc's cgroupfs driver) or \
             slice:prefix:name (systemd's form)",
        ));
    };
    let mut clean = PathBuf::from("/");
    for component in Path::new(&path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => clean.push(name),
            Component::ParentDir => {
                return Err(bad(
                    text,
                    "\"..\" may not appear in it (it could leave the hierarchy)",
                ))
            }
            Component::Prefix(_) => return Err(bad(text, "not a Unix path")),
        }
    }
    if clean == Path::new("/") {
        return Err(bad(
            text,
            "names the root cgroup, which holds the whole host",
        ));
    }
    Ok(clean)
}

/// `slice:prefix:name` → `/<slice's path>/<prefix>-<name>.scope` (a name that is itself
/// a slice is taken as is).
fn systemd_path(text: &str) -> Result<String, HostCgroupError> {
    let parts: Vec<&str> = text.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(bad(
            text,
            "systemd's form is slice:prefix:name, with exactly two colons",
        ));
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let slice_path = expand_slice(slice).map_err(|reason| bad(text, reason))?;
    for (what, part) in [("prefix", prefix), ("name", name)] {
        if part.contains('/') || part == "." || part == ".." {
            return Err(bad(
                text,
                format!("the unit's {what} {part:?} is not a name"),
            ));
        }
    }
    if name.is_empty() {
        return Err(bad(text, "the unit's name is empty"));
    }
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(format!("{slice_path}/{unit}"))
}

/// systemd's slice naming: `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`; `-.slice`
/// is the root.
fn expand_slice(slice: &str) -> Result<String, String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(format!("the slice {slice:?} does not end in .slice"));
    };
    if slice.contains('/') {
        return Err(format!("the slice {slice:?} contains a slash"));
    }
    if stem == "-" {
        return Ok(String::new());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            return Err(format!(
                "the slice {slice:?} has an empty part between dashes"
            ));
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(part);
        path.push_str(".slice");
        prefix.push_str(part);
        prefix.push('-');
    }
    Ok(path)
}

/// Which cgroup version the hierarchies under the root are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// What the VM's processes may use together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: u64,
    pub cpu_quota_us: u64,
    pub cpu_period_us: u64,
    pub pids: u64,
}

impl Limits {
    /// For a VM that may reach `max_vcpus` and `max_memory_mib` (its hotplug room, else
    /// its size): its memory plus [`OVERHEAD_MIB`], its vCPUs plus [`EXTRA_CPUS`] CPUs'
    /// worth of time each period, [`PIDS_BASE`] plus [`PIDS_PER_VCPU`] per vCPU tasks.
    pub fn for_vm(max_vcpus: u32, max_memory_mib: u32) -> Limits {
        let vcpus = u64::from(max_vcpus.max(1));
        Limits {
            memory_bytes: (u64::from(max_memory_mib) + OVERHEAD_MIB) * MIB,
            cpu_quota_us: (vcpus + EXTRA_CPUS) * CPU_PERIOD_US,
            cpu_period_us: CPU_PERIOD_US,
            pids: PIDS_BASE + PIDS_PER_VCPU * vcpus,
        }
    }

    /// Each limit the larger of the two.
    pub fn max(self, other: Limits) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
            cpu_quota_us: self.cpu_quota_us.max(other.cpu_quota_us),
            cpu_period_us: self.cpu_period_us.max(other.cpu_period_us),
            pids: self.pids.max(other.pids),
        }
    }
}

/// One directory of the cgroup: one per v1 hierarchy, the only one under v2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDir {
    pub dir: PathBuf,
    /// The controllers it has (v1: the hierarchy's; v2: those enabled for it).
    pub controllers: Vec<String>,
}

/// A sandbox's host cgroup, as the sandbox's state keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCgroup {
    pub version: CgroupVersion,
    /// Below each hierarchy's root, e.g. `/ward/<sandbox ID>`.
    pub path: PathBuf,
    pub dirs: Vec<CgroupDir>,
    /// What was written last.
    pub limits: Limits,
    /// Parent directories this sandbox made, deepest first: removed after its own ones
    /// where they are empty.
    #[serde(default)]
    pub made_parents: Vec<PathBuf>,
}

/// The hierarchies under `root`: (version, [(hierarchy root, its controllers)]).
fn hierarchies(root: &Path) -> Result<(CgroupVersion, Vec<CgroupDir>), HostCgroupError> {
    if root.join("cgroup.controllers").exists() {
        return Ok((
            CgroupVersion::V2,
            vec![CgroupDir {
                dir: root.to_path_buf(),
                controllers: Vec::new(),
            }],
        ));
    }
    let mut found: Vec<CgroupDir> = Vec::new();
    for controller in V1_CONTROLLERS {
        let dir = root.join(controller);
        if !dir.join("cgroup.procs").exists() {
            continue;
        }
        // Co-mounted controllers (cpu,cpuacct) are one hierarchy behind two links.
        let real = std::fs::canonicalize(&dir).map_err(|e| io("resolving", &dir, e))?;
        match found.iter_mut().find(|h| h.dir == real) {
            Some(h) => h.controllers.push(controller.to_string()),
            None => found.push(CgroupDir {
                dir: real,
                controllers: vec![controller.to_string()],
            }),
        }
    }
    if found.is_empty() {
        return Err(HostCgroupError::NoHierarchy(root.to_path_buf()));
    }
    Ok((CgroupVersion::V1, found))
}

/// Makes `dir` and its missing parents, adding each directory it made to `made` (parents
/// first). A parent that another sandbox's removal takes away in between is made again:
/// `dir`'s creation fails with ENOENT, and the walk up starts over.
fn make_dirs(dir: &Path, made: &mut Vec<PathBuf>) -> Result<(), HostCgroupError> {
    for _ in 0..3 {
        match std::fs::create_dir(dir) {
            Ok(()) => {
                made.push(dir.to_path_buf());
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match dir.parent() {
                Some(parent) if parent != dir => make_dirs(parent, made)?,
                _ => return Err(io("creating", dir, e)),
            },
            Err(e) => return Err(io("creating", dir, e)),
        }
    }
    std::fs::create_dir(dir)
        .map(|()| made.push(dir.to_path_buf()))
        .map_err(|e| io("creating", dir, e))
}

fn write(file: &Path, value: &str) -> Result<(), HostCgroupError> {
    std::fs::write(file, value).map_err(|e| io(format!("writing {value:?} to"), file, e))
}

fn read(file: &Path) -> Result<String, HostCgroupError> {
    std::fs::read_to_string(file).map_err(|e| io("reading", file, e))
}

/// cgroup v2: makes `path` below `root` with [`V2_CONTROLLERS`] enabled for it where the
/// root offers them; returns those it has.
fn make_v2(
    root: &Path,
    path: &Path,
    made: &mut Vec<PathBuf>,
) -> Result<Vec<String>, HostCgroupError> {
    let mut dir = root.to_path_buf();
    let mut available: Vec<String> = read(&root.join("cgroup.controllers"))?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    available.retain(|c| V2_CONTROLLERS.contains(&c.as_str()));
    for component in path.components().skip(1) {
        // Each level hands the controllers down to the next in its subtree_control.
        let control = dir.join("cgroup.subtree_control");
        let enabled = read(&control)?;
        for controller in &available {
            if !enabled.split_whitespace().any(|c| c == controller) {
                write(&control, &format!("+{controller}"))?;
            }
        }
        dir.push(component);
        make_dirs(&dir, made)?;
    }
    Ok(available)
}

impl HostCgroup {
    /// Makes the cgroup `path` (see [`sandbox_path`]) in every hierarchy under `root` and
    /// gives it `limits`. An existing directory is taken over (an engine may have made
    /// it). On failure, what it made is removed again.
    pub fn create(root: &Path, path: &Path, limits: Limits) -> Result<HostCgroup, HostCgroupError> {
        let (version, roots) = hierarchies(root)?;
        let relative = path.strip_prefix("/").unwrap_or(path);
        let mut cgroup = HostCgroup {
            version,
            path: path.to_path_buf(),
            dirs: Vec::new(),
            limits: Limits::default(),
            made_parents: Vec::new(),
        };
        let mut made = Vec::new();
        let result = (|| {
            for hierarchy in &roots {
                let dir = hierarchy.dir.join(relative);
                let controllers = match version {
                    CgroupVersion::V2 => make_v2(&hierarchy.dir, path, &mut made)?,
                    CgroupVersion::V1 => {
                        make_dirs(&dir, &mut made)?;
                        hierarchy.controllers.clone()
                    }
                };
                cgroup.dirs.push(CgroupDir { dir, controllers });
            }
            cgroup.set_limits(limits)
        })();
        match result {
            Ok(()) => {
                cgroup.made_parents = made
                    .into_iter()
                    .rev()
                    .filter(|dir| !cgroup.dirs.iter().any(|d| &d.dir == dir))
                    .collect();
                Ok(cgroup)
            }
            Err(e) => {
                // Nothing ran in it yet: what was made goes at once, deepest first.
                for dir in made.iter().rev() {
                    let _ = std::fs::remove_dir(dir);
                }
                Err(e)
            }
        }
    }

    /// The directories whose `cgroup.procs` each process joins.
    pub fn join_dirs(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.dir.clone()).collect()
    }

    fn has(dir: &CgroupDir, controller: &str) -> bool {
        dir.controllers.iter().any(|c| c == controller)
    }

    /// Writes `limits` into every directory whose controllers take them.
    pub fn set_limits(&mut self, limits: Limits) -> Result<(), HostCgroupError> {
        for dir in &self.dirs {
            let d = &dir.dir;
            match self.version {
                CgroupVersion::V1 => {
                    if Self::has(dir, "memory") {
                        write(
                            &d.join("memory.limit_in_bytes"),
                            &limits.memory_bytes.to_string(),
                        )?;
                    }
                    if Self::has(dir, "cpu") {
                        write(
                            &d.join("cpu.cfs_period_us"),
                            &limits.cpu_period_us.to_string(),
                        )?;
                        let quota = d.join("cpu.cfs_quota_us");
                        match std::fs::write(&quota, limits.cpu_quota_us.to_string()) {
                            Ok(()) => {}
                            // v1 refuses a quota above the parent's (a pod's limit): the
                            // parent's then bounds the VM, and ours is left unlimited.
                            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                                write(&quota, "-1")?
                            }
                            Err(e) => {
                                return Err(io(
                                    format!("writing {:?} to", limits.cpu_quota_us.to_string()),
                                    &quota,
                                    e,
                                ))
                            }
                        }
                    }
                    if Self::has(dir, "pids") {
                        write(&d.join("pids.max"), &limits.pids.to_string())?;
                    }
                }
                CgroupVersion::V2 => {
                    if Self::has(dir, "memory") {
                        write(&d.join("memory.max"), &limits.memory_bytes.to_string())?;
                    }
                    if Self::has(dir, "cpu") {
                        write(
                            &d.join("cpu.max"),
                            &format!("{} {}", limits.cpu_quota_us, limits.cpu_period_us),
                        )?;
                    }
                    if Self::has(dir, "pids") {
                        write(&d.join("pids.max"), &limits.pids.to_string())?;
                    }
                }
            }
        }
        self.limits = limits;
        Ok(())
    }

    /// The file that holds the memory limit, for logs and tests.
    pub fn memory_limit_file(&self) -> Option<PathBuf> {
        let dir = self.dirs.iter().find(|d| Self::has(d, "memory"))?;
        Some(dir.dir.join(match self.version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        }))
    }

    /// Removes the cgroup's directories, waiting up to `timeout` for processes that are
    /// still exiting (rmdir fails with EBUSY while any is in it), then the parents it made
    /// that are empty. Gone already is fine. Every directory is tried; the first failure
    /// is returned.
    pub fn remove(&self, timeout: Duration) -> Result<(), HostCgroupError> {
        let deadline = Instant::now() + timeout;
        let mut first_error = None;
        for dir in &self.dirs {
            if let Err(e) = remove_dir(&dir.dir, deadline, timeout) {
                first_error.get_or_insert(e);
            }
        }
        // Deepest first; one that is not empty (another sandbox's cgroup is in it) stays,
        // and so do its own parents, which rmdir refuses for the same reason.
        for dir in &self.made_parents {
            let _ = std::fs::remove_dir(dir);
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn remove_dir(dir: &Path, deadline: Instant, timeout: Duration) -> Result<(), HostCgroupError> {
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if Instant::now() >= deadline {
                    let pids = std::fs::read_to_string(dir.join("cgroup.procs"))
                        .map(|text| text.split_whitespace().collect::<Vec<_>>().join(" "))
                        .unwrap_or_else(|e| format!("(unreadable: {e})"));
                    return Err(HostCgroupError::Busy {
                        dir: dir.to_path_buf(),
                        pids,
                        secs: timeout.as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(io("removing", dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> String {
        parse_cgroups_path(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .display()
            .to_string()
    }

    fn refused(text: &str) -> String {
        match parse_cgroups_path(text) {
            Ok(path) => panic!("{text:?} was taken as {}", path.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn cgroupfs_paths_are_taken_as_they_are_cleaned() {
        assert_eq!(
            parsed("/libpod_parent/libpod-0123abcd"),
            "/libpod_parent/libpod-0123abcd"
        );
        assert_eq!(parsed("/default/ctr1"), "/default/ctr1");
        assert_eq!(parsed("/k8s.io//abc/./def/"), "/k8s.io/abc/def");
    }

    #[test]
    fn systemd_paths_become_the_scope_in_its_slice() {
        assert_eq!(
            parsed("machine.slice:libpod:0123abcd"),
            "/machine.slice/libpod-0123abcd.scope"
        );
        assert_eq!(
            parsed("system.slice:docker:abc"),
            "/system.slice/docker-abc.scope"
        );
        assert_eq!(
            parsed("kubepods-besteffort-pod12.slice:cri-containerd:abc"),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
        );
        // An empty slice is system.slice; the root slice is the root.
        assert_eq!(parsed(":ward:x"), "/system.slice/ward-x.scope");
        assert_eq!(parsed("-.slice:ward:x"), "/ward-x.scope");
        // A unit that is a slice is taken as it is.
        assert_eq!(parsed("user.slice:p:my.slice"), "/user.slice/my.slice");
    }

    #[test]
    fn escapes_and_nonsense_are_refused_clearly() {
        assert!(refused("/../../etc").contains("\"..\""));
        assert!(refused("/ward/../../x").contains("\"..\""));
        assert!(refused("relative/path").contains("must be absolute"));
        assert!(refused("..").contains("must be absolute"));
        assert!(refused("/").contains("root cgroup"));
        assert!(refused("/./").contains("root cgroup"));
        assert!(refused("a.slice:b").contains("exactly two colons"));
        assert!(refused("a.slice:b:c:d").contains("exactly two colons"));
        assert!(refused("notaslice:p:n").contains("does not end in .slice"));
        assert!(refused("a--b.slice:p:n").contains("empty part"));
        assert!(refused("a.slice:p:..").contains("not a name"));
        assert!(refused("a.slice:p:x/y").contains("not a name"));
        assert!(refused("a.slice:p:").contains("empty"));
        assert!(refused("/a\0b").contains("NUL"));
        assert!(refused("relative/path").starts_with("linux.cgroupsPath \"relative/path\""));
    }

    #[test]
    fn without_an_engine_path_the_sandbox_gets_wards_own() {
        assert_eq!(
            sandbox_path(None, "pod1").unwrap(),
            PathBuf::from("/ward/pod1")
        );
        assert_eq!(
            sandbox_path(Some(Path::new("")), "pod1").unwrap(),
            PathBuf::from("/ward/pod1")
        );
        assert_eq!(
            sandbox_path(Some(Path::new("/libpod_parent/libpod-x")), "pod1").unwrap(),
            PathBuf::from("/libpod_parent/libpod-x")
        );
    }

    #[test]
    fn limits_follow_the_vms_maximum() {
        let limits = Limits::for_vm(2, 256);
        assert_eq!(limits.memory_bytes, (256 + OVERHEAD_MIB) * MIB);
        assert_eq!(limits.cpu_quota_us, 3 * CPU_PERIOD_US);
        assert_eq!(limits.cpu_period_us, CPU_PERIOD_US);
        assert_eq!(limits.pids, PIDS_BASE + 2 * PIDS_PER_VCPU);
        let bigger = Limits::for_vm(4, 128);
        let both = limits.max(bigger);
        assert_eq!(both.memory_bytes, limits.memory_bytes);
        assert_eq!(both.cpu_quota_us, bigger.cpu_quota_us);
    }

    /// A fake v1 tree (directories and files in a temporary directory): the cgroup is
    /// made in each hierarchy, co-mounted ones once, with the limits written; removal
    /// takes them and the parents this sandbox made, unless another sandbox is in one.
    #[test]
    fn a_v1_tree_gets_the_cgroup_in_each_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for h in ["memory", "cpu,cpuacct", "pids"] {
            std::fs::create_dir(r.join(h)).unwrap();
            std::fs::write(r.join(h).join("cgroup.procs"), "").unwrap();
        }
        std::os::unix::fs::symlink("cpu,cpuacct", r.join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", r.join("cpuacct")).unwrap();
        let limits = Limits::for_vm(1, 256);
        let cgroup = HostCgroup::create(r, Path::new("/ward/sb"), limits).unwrap();
        let other = HostCgroup::create(r, Path::new("/ward/other"), limits).unwrap();
        assert_eq!(cgroup.made_parents.len(), 3, "{:?}", cgroup.made_parents);
        assert!(other.made_parents.is_empty(), "{:?}", other.made_parents);
        assert_eq!(cgroup.version, CgroupVersion::V1);
        assert_eq!(cgroup.dirs.len(), 3, "{:?}", cgroup.dirs);
        let mem = std::fs::read_to_string(r.join("memory/ward/sb/memory.limit_in_bytes")).unwrap();
        assert_eq!(mem, ((256 + OVERHEAD_MIB) * MIB).to_string());
        let quota =
            std::fs::read_to_string(r.join("cpu,cpuacct/ward/sb/cpu.cfs_quota_us")).unwrap();
        assert_eq!(quota, "200000");
        assert_eq!(
            cgroup.memory_limit_file().unwrap(),
            std::fs::canonicalize(r)
                .unwrap()
                .join("memory/ward/sb/memory.limit_in_bytes")
        );
        // Regular files would keep the directories from going: remove them first, as the
        // kernel's cgroupfs does by itself.
        for dir in cgroup.join_dirs().into_iter().chain(other.join_dirs()) {
            for f in std::fs::read_dir(&dir).unwrap().flatten() {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
        cgroup.remove(Duration::from_secs(1)).unwrap();
        assert!(!r.join("memory/ward/sb").exists());
        assert!(r.join("memory/ward/other").exists());
        // Gone already is fine.
        cgroup.remove(Duration::from_secs(1)).unwrap();
        // The other sandbox did not make /ward: it stays with it.
        other.remove(Duration::from_secs(1)).unwrap();
        assert!(!r.join("memory/ward/other").exists());
        assert!(r.join("memory/ward").exists());
        // A sandbox alone in a parent it made takes it along.
        let alone = HostCgroup::create(r, Path::new("/a/b/c"), limits).unwrap();
        for dir in alone.join_dirs() {
            for f in std::fs::read_dir(&dir).unwrap().flatten() {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
        alone.remove(Duration::from_secs(1)).unwrap();
        for h in ["memory", "cpu,cpuacct", "pids"] {
            assert!(!r.join(h).join("a").exists(), "{h}/a stayed");
        }
    }

    /// A fake v2 tree: the controllers the root offers are enabled level by level down to
    /// the cgroup (each parent's subtree_control), and the v2 files get the limits.
    #[test]
    fn a_v2_tree_enables_the_controllers_down_the_path() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(
            r.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids\n",
        )
        .unwrap();
        std::fs::write(r.join("cgroup.subtree_control"), "memory\n").unwrap();
        // The kernel gives each new cgroup its files; the fake parent has them already.
        std::fs::create_dir(r.join("ward")).unwrap();
        std::fs::write(r.join("ward/cgroup.subtree_control"), "").unwrap();
        let limits = Limits::for_vm(1, 256);
        let cgroup = HostCgroup::create(r, Path::new("/ward/sb"), limits).unwrap();
        assert_eq!(cgroup.version, CgroupVersion::V2);
        assert_eq!(cgroup.join_dirs(), [r.join("ward/sb")]);
        assert_eq!(cgroup.dirs[0].controllers, ["cpu", "memory", "pids"]);
        assert!(cgroup.made_parents.is_empty(), "/ward was there before");
        // Files hold the last write: the last controller enabled at each level.
        let read = |f: &str| std::fs::read_to_string(r.join(f)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+pids");
        assert_eq!(read("ward/cgroup.subtree_control"), "+pids");
        assert_eq!(
            read("ward/sb/memory.max"),
            ((256 + OVERHEAD_MIB) * MIB).to_string()
        );
        assert_eq!(read("ward/sb/cpu.max"), "200000 100000");
        assert_eq!(
            read("ward/sb/pids.max"),
            (PIDS_BASE + PIDS_PER_VCPU).to_string()
        );
        assert_eq!(
            cgroup.memory_limit_file().unwrap(),
            r.join("ward/sb/memory.max")
        );
    }

    /// The real cgroup file system, where this test may write it (root): the limits land
    /// in the kernel's files and the directories go again.
    #[test]
    fn the_hosts_cgroupfs_takes_the_cgroup() {
        let path = PathBuf::from(format!("/ward-unit-test/{}", std::process::id()));
        let limits = Limits::for_vm(1, 64);
        let cgroup = match HostCgroup::create(Path::new(CGROUP_ROOT), &path, limits) {
            Ok(cgroup) => cgroup,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let file = cgroup.memory_limit_file().expect("a memory controller");
        let written = std::fs::read_to_string(&file).unwrap();
        assert_eq!(written.trim(), limits.memory_bytes.to_string());
        cgroup.remove(Duration::from_secs(2)).unwrap();
        for dir in cgroup.join_dirs() {
            assert!(!dir.exists(), "{} stayed", dir.display());
            // It made its parent, and took it along.
            assert!(!dir.parent().unwrap().exists(), "{} stayed", dir.display());
        }
    }
}
