//! `ward spec [--bundle B] [--rootless]`: writes the same starting config.json as
//! `runc spec`, field for field. Engines and test suites make a bundle with `RUNTIME spec`,
//! edit a few fields and run it, so anything that differs from runc's template (a
//! terminal that is off, extra capabilities) breaks what they expect of the rest.

use serde_json::{json, Value};

use crate::cli::CliError;

/// The runtime-spec version of the template, as runc writes it.
const TEMPLATE_OCI_VERSION: &str = "1.0.2-dev";

/// The capabilities runc grants a new container, in every set but the inheritable one.
const TEMPLATE_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// runc's template for a container run by root.
pub fn template() -> Value {
    json!({
        "ociVersion": TEMPLATE_OCI_VERSION,
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": TEMPLATE_CAPS,
                "effective": TEMPLATE_CAPS,
                "permitted": TEMPLATE_CAPS,
                "ambient": TEMPLATE_CAPS
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// The template turned rootless the way runc's `--rootless` does it: a user namespace
/// mapping root to the caller, no network namespace (the caller could not configure
/// one), the host's /sys bound in (a user namespace may not mount sysfs without a
/// network namespace of its own), devpts without the tty group (unmapped), and no
/// resource limits (no cgroup to set them in).
pub fn rootless(mut spec: Value, uid: u32, gid: u32) -> Value {
    let linux = &mut spec["linux"];
    if let Some(map) = linux.as_object_mut() {
        map.remove("resources");
    }
    if let Some(namespaces) = linux["namespaces"].as_array_mut() {
        namespaces.retain(|ns| ns["type"] != "network");
        namespaces.push(json!({"type": "user"}));
    }
    linux["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
    linux["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for mount in mounts.iter_mut() {
            if mount["destination"] == "/sys" {
                *mount = json!({"destination": "/sys", "type": "none", "source": "/sys",
                                "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
            } else if let Some(options) = mount.get_mut("options").and_then(Value::as_array_mut) {
                options.retain(|o| !o.as_str().is_some_and(|o| o.starts_with("gid=")));
            }
        }
    }
    spec
}

pub fn execute(args: &liboci_cli::Spec) -> Result<i32, CliError> {
    let dir = args
        .bundle
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let path = dir.join("config.json");
    if path.exists() {
        return Err(CliError::Usage(format!(
            "file {} exists: remove it first or use a different location",
            path.display()
        )));
    }
    let spec = if args.rootless {
        rootless(
            template(),
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    } else {
        template()
    };
    let text = serde_json::to_string_pretty(&spec).map_err(|e| CliError::Io {
        what: "formatting the spec".into(),
        source: e.into(),
    })?;
    std::fs::write(&path, text + "\n").map_err(|source| CliError::Io {
        what: format!("writing {}", path.display()),
        source,
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_are_valid_oci_specs() {
        for spec in [template(), rootless(template(), 1000, 1000)] {
            let parsed: oci_spec::runtime::Spec =
                serde_json::from_value(spec.clone()).expect("an OCI runtime spec");
            let process = parsed.process().as_ref().expect("a process");
            assert_eq!(process.terminal(), Some(true));
            let caps = process.capabilities().as_ref().expect("capabilities");
            assert!(
                caps.inheritable().is_none(),
                "runc grants no inheritable set"
            );
        }
    }

    #[test]
    fn rootless_maps_the_caller_and_drops_what_it_cannot_set_up() {
        let spec = rootless(template(), 1000, 1001);
        assert_eq!(spec["linux"]["uidMappings"][0]["hostID"], 1000);
        assert_eq!(spec["linux"]["gidMappings"][0]["hostID"], 1001);
        let types: Vec<&str> = spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|ns| ns["type"].as_str())
            .collect();
        assert_eq!(types, ["pid", "ipc", "uts", "mount", "user"]);
        assert!(spec["linux"].get("resources").is_none());
        assert!(spec["mounts"][0].get("options").is_none());
        let sys = &spec["mounts"][5];
        assert_eq!(sys["source"], "/sys");
        assert_eq!(sys["options"][0], "rbind");
        assert!(!spec["mounts"][2]["options"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "gid=5"));
    }
}
