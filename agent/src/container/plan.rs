//! From the host's request to what the children will do, pure: the OCI spec (or an exec's
//! process object) is parsed and checked here, so that everything wrong with it is an
//! INVALID_ARGUMENT naming the field before anything is mounted or forked.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Process, Spec};
use thiserror::Error;

use super::caps::{self, CapsError};
use super::cgroup::{self, CgroupError, ResourcePlan};
use super::command::{self, CommandError};
use super::devices::{self, DeviceError};
use super::hooks::{self, GuestHooks, HookError};
use super::mounts::{self, check_path, MountError};
use super::namespaces::{self, NamespaceError, NamespacePlan};
use super::rlimits::{self, RlimitError};
use super::rootfs::RootfsPlan;
use super::seccomp::{self, SeccompError};
use super::spawn::ProcessSetup;
use super::user::{self, UserError};

/// Largest config.json accepted.
pub const MAX_SPEC_BYTES: usize = 4 * 1024 * 1024;
/// Most masked/readonly paths or sysctls accepted, each.
const MAX_PATH_LIST: usize = 1024;

#[derive(Debug, Error)]
pub enum PlanError {
    #[error("config.json is {0} bytes, more than {MAX_SPEC_BYTES}")]
    TooLarge(usize),
    #[error("config.json does not parse: {0}")]
    Json(serde_json::Error),
    #[error("the process object does not parse: {0}")]
    ProcessJson(serde_json::Error),
    #[error("config.json has no process")]
    NoProcess,
    #[error("config.json has no linux section")]
    NoLinux,
    #[error("namespace {0:?} cannot be shared in a pod (network, ipc, uts and pid can)")]
    NotJoinable(String),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Caps(#[from] CapsError),
    #[error(transparent)]
    Rlimit(#[from] RlimitError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("{list} has {count} entries, at most {MAX_PATH_LIST} are accepted")]
    TooMany { list: &'static str, count: usize },
    #[error("sysctl {0:?} is not a valid name")]
    BadSysctl(String),
    #[error("hostname {0:?} is longer than 64 bytes or contains a NUL byte")]
    BadHostname(String),
}

/// Everything CreateContainer will do, decided before doing any of it.
#[derive(Debug)]
pub struct InitPlan {
    pub namespaces: NamespacePlan,
    pub id_maps: Option<(String, String)>,
    pub rootfs: RootfsPlan,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub process: ProcessSetup,
    /// The cgroup, relative to /sys/fs/cgroup.
    pub cgroup: PathBuf,
    pub resources: ResourcePlan,
    /// createContainer and startContainer hooks.
    pub hooks: GuestHooks,
    /// `linux.seccomp`, translated; compiled by the agent, loaded by the container's
    /// processes (init and execs).
    pub seccomp: Option<seccomp::Profile>,
    /// Parts of the spec the agent does not enforce, for a warning in the log.
    pub ignored: Vec<&'static str>,
}

pub fn parse_spec(json: &[u8]) -> Result<Spec, PlanError> {
    if json.len() > MAX_SPEC_BYTES {
        return Err(PlanError::TooLarge(json.len()));
    }
    serde_json::from_slice(json).map_err(PlanError::Json)
}

pub fn parse_process(json: &[u8]) -> Result<Process, PlanError> {
    if json.len() > MAX_SPEC_BYTES {
        return Err(PlanError::TooLarge(json.len()));
    }
    serde_json::from_slice(json).map_err(PlanError::ProcessJson)
}

/// `rootfs` is the container's root as the agent sees it (it replaces root.path).
pub fn init_plan(id: &str, spec: &Spec, rootfs: &Path) -> Result<InitPlan, PlanError> {
    let process = spec.process().as_ref().ok_or(PlanError::NoProcess)?;
    let linux = spec.linux().as_ref().ok_or(PlanError::NoLinux)?;
    let namespaces = namespaces::plan(linux.namespaces().as_deref().unwrap_or(&[]))?;

    let uid_mappings = linux.uid_mappings().as_deref().unwrap_or(&[]);
    let gid_mappings = linux.gid_mappings().as_deref().unwrap_or(&[]);
    let id_maps = if namespaces.new_user {
        if uid_mappings.is_empty() || gid_mappings.is_empty() {
            return Err(NamespaceError::UserNsWithoutMappings.into());
        }
        Some((
            user::id_map_text("linux.uidMappings", uid_mappings)?,
            user::id_map_text("linux.gidMappings", gid_mappings)?,
        ))
    } else {
        if !uid_mappings.is_empty() || !gid_mappings.is_empty() {
            return Err(NamespaceError::MappingsWithoutUserNs.into());
        }
        None
    };

    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    let domainname = spec.domainname().clone().filter(|h| !h.is_empty());
    for name in hostname.iter().chain(domainname.iter()) {
        if name.len() > 64 || name.contains('\0') {
            return Err(PlanError::BadHostname(name.clone()));
        }
        if !namespaces.new_uts() {
            return Err(NamespaceError::HostnameWithoutUts.into());
        }
    }

    let spec_mounts = mounts::plan_mounts(spec.mounts().as_deref().unwrap_or(&[]))?;
    let default_devices = spec_mounts.iter().any(|m| {
        m.destination
            .components()
            .eq(Path::new("/dev").components())
    });
    let propagation = linux
        .rootfs_propagation()
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(mounts::rootfs_propagation)
        .transpose()?;
    let cgroup = cgroup::confine(linux.cgroups_path().as_deref(), id)?;
    let rootfs_plan = RootfsPlan {
        root: rootfs.to_path_buf(),
        readonly: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        propagation,
        mounts: spec_mounts,
        default_devices,
        masked: path_list("linux.maskedPaths", linux.masked_paths())?,
        readonly_paths: path_list("linux.readonlyPaths", linux.readonly_paths())?,
        sysctls: sysctls(linux.sysctl())?,
        devices: devices::plan(linux.devices().as_deref().unwrap_or(&[]))?,
        in_user_ns: namespaces.new_user,
        cgroup_dir: Path::new(cgroup::CGROUP_ROOT).join(&cgroup),
    };

    let resources = match linux.resources() {
        Some(res) => cgroup::resource_plan(res)?,
        None => ResourcePlan::default(),
    };

    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(seccomp::translate)
        .transpose()?;
    let mut ignored = resources.ignored.clone();
    if process.apparmor_profile().is_some() || process.selinux_label().is_some() {
        ignored.push("LSM labels");
    }

    Ok(InitPlan {
        namespaces,
        id_maps,
        rootfs: rootfs_plan,
        hostname,
        domainname,
        process: process_setup(process, rootfs)?,
        cgroup,
        resources,
        hooks: hooks::plan(
            spec.hooks().as_ref(),
            id,
            rootfs,
            spec.annotations().clone().unwrap_or_default(),
        )?,
        seccomp,
        ignored,
    })
}

/// The final steps of a process; `root` is where the agent reads the container's
/// /etc/passwd (for HOME).
pub fn process_setup(process: &Process, root: &Path) -> Result<ProcessSetup, PlanError> {
    let user = user::plan(process.user())?;
    let env = process.env().clone().unwrap_or_default();
    let env = command::with_home(env, &user::home_for(root, user.uid));
    let args = process.args().clone().unwrap_or_default();
    let command = command::plan(&args, &env, process.cwd())?;
    Ok(ProcessSetup {
        command,
        user,
        caps: process
            .capabilities()
            .as_ref()
            .map(caps::plan)
            .transpose()?,
        rlimits: rlimits::plan(process.rlimits().as_deref().unwrap_or(&[]))?,
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        oom_score_adj: process.oom_score_adj(),
        terminal: process.terminal().unwrap_or(false),
        seccomp: None,
    })
}

fn path_list(list: &'static str, paths: &Option<Vec<String>>) -> Result<Vec<PathBuf>, PlanError> {
    let paths = paths.as_deref().unwrap_or(&[]);
    if paths.len() > MAX_PATH_LIST {
        return Err(PlanError::TooMany {
            list,
            count: paths.len(),
        });
    }
    paths
        .iter()
        .map(|p| {
            let path = PathBuf::from(p);
            check_path(list, &path)?;
            Ok(path)
        })
        .collect()
}

/// `net.ipv4.ip_forward` → `net/ipv4/ip_forward` (under /proc/sys).
fn sysctls(
    map: &Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<(PathBuf, String)>, PlanError> {
    let Some(map) = map else {
        return Ok(Vec::new());
    };
    if map.len() > MAX_PATH_LIST {
        return Err(PlanError::TooMany {
            list: "linux.sysctl",
            count: map.len(),
        });
    }
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let valid = !key.is_empty()
            && key.len() <= 256
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
        // Every segment non-empty: no "..", no "a..b", no leading or trailing separator.
        let segments_ok = key.split(['.', '/']).all(|s| !s.is_empty());
        let path = PathBuf::from(key.replace('.', "/"));
        let normal = path.components().all(|c| matches!(c, Component::Normal(_)));
        if !valid || !segments_ok || !normal || value.contains('\0') || value.len() > 4096 {
            return Err(PlanError::BadSysctl(key.clone()));
        }
        out.push((path, value.clone()));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sched::CloneFlags;

    fn default_spec_with(args: &[&str]) -> Vec<u8> {
        let mut spec = Spec::default();
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        spec.set_process(Some(process));
        serde_json::to_vec(&spec).unwrap()
    }

    #[test]
    fn the_default_spec_plans() {
        let spec = parse_spec(&default_spec_with(&["echo", "hello"])).unwrap();
        let plan = init_plan("c1", &spec, Path::new("/run/ward/containers/c1/rootfs")).unwrap();
        assert!(plan
            .namespaces
            .unshare
            .contains(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS));
        assert!(!plan.namespaces.new_user);
        assert_eq!(plan.cgroup, PathBuf::from("ward/c1"));
        assert!(plan.rootfs.default_devices);
        assert_eq!(
            plan.rootfs.root,
            PathBuf::from("/run/ward/containers/c1/rootfs")
        );
        assert!(plan.rootfs.masked.contains(&PathBuf::from("/proc/kcore")));
        assert_eq!(plan.process.command.program, "echo");
        assert_eq!(plan.process.command.argv.len(), 2);
        // The default spec has a PATH and gets a HOME.
        assert!(plan
            .process
            .command
            .envp
            .iter()
            .any(|e| e.to_bytes() == b"HOME=/"));
        assert!(plan.process.caps.is_some());
    }

    #[test]
    fn bad_specs_name_the_problem() {
        let err = parse_spec(b"{\"ociVersion\": 5}").unwrap_err();
        assert!(
            err.to_string().starts_with("config.json does not parse"),
            "{err}"
        );
        let mut spec = parse_spec(&default_spec_with(&["true"])).unwrap();
        spec.set_process(None);
        assert!(matches!(
            init_plan("c", &spec, Path::new("/r")),
            Err(PlanError::NoProcess)
        ));
    }

    #[test]
    fn the_seccomp_profile_is_planned_not_ignored() {
        let mut spec = parse_spec(&default_spec_with(&["true"])).unwrap();
        let mut linux = spec.linux().clone().unwrap();
        let profile = |action: &str| {
            serde_json::from_value(serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": action, "errnoRet": 1}]
            }))
            .unwrap()
        };
        linux.set_seccomp(Some(profile("SCMP_ACT_ERRNO")));
        spec.set_linux(Some(linux.clone()));
        let plan = init_plan("c", &spec, Path::new("/r")).unwrap();
        assert_eq!(plan.seccomp.unwrap().rules.len(), 2);
        assert!(plan.ignored.is_empty(), "{:?}", plan.ignored);
        // Its errors are the container's, naming the field.
        linux.set_seccomp(Some(profile("SCMP_ACT_NOTIFY")));
        spec.set_linux(Some(linux));
        let err = init_plan("c", &spec, Path::new("/r")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("linux.seccomp: syscalls[0] (mkdir, mkdirat) is SCMP_ACT_NOTIFY"),
            "{err}"
        );
    }

    #[test]
    fn sysctl_names_become_proc_paths() {
        let map = std::collections::HashMap::from([
            ("net.ipv4.ip_forward".to_string(), "1".to_string()),
            ("kernel.msgmax".to_string(), "8192".to_string()),
        ]);
        assert_eq!(
            sysctls(&Some(map)).unwrap(),
            vec![
                (PathBuf::from("kernel/msgmax"), "8192".to_string()),
                (PathBuf::from("net/ipv4/ip_forward"), "1".to_string()),
            ]
        );
        for bad in ["../../etc/passwd", "net..x", "a b", ""] {
            let map = std::collections::HashMap::from([(bad.to_string(), "1".to_string())]);
            assert!(sysctls(&Some(map)).is_err(), "{bad}");
        }
    }

    #[test]
    fn exec_process_objects_plan() {
        let process = parse_process(
            br#"{"args": ["cat", "/proc/version"], "cwd": "/", "user": {"uid": 0, "gid": 0},
                 "env": ["PATH=/bin"]}"#,
        )
        .unwrap();
        let setup = process_setup(&process, Path::new("/nonexistent")).unwrap();
        assert_eq!(setup.command.candidates[0].to_bytes(), b"/bin/cat");
        assert!(setup.caps.is_none());
        assert!(parse_process(b"[]").is_err());
    }
}
