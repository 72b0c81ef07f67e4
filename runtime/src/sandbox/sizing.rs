//! How big a sandbox's VM boots: ward's defaults (`[guest] vcpus`, `memory_mib`, what the
//! guest itself needs) plus what the sandbox asks for. The sandbox's limits come from its
//! own container's `linux.resources` (a podman pod's infra container, a standalone
//! container) or from the CRI's sandbox annotations (containerd 1.7 and later write the
//! pod's summed limits there). Containers that join later bring their own resources by
//! hotplug, not here.

use std::collections::HashMap;

use oci_spec::runtime::Spec;

/// The CRI plugin's annotations for the pod's CPU quota and period and memory limit.
const CRI_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
const CRI_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
const CRI_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";

const MIB: u64 = 1024 * 1024;

/// The VM's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Size {
    pub vcpus: u32,
    pub memory_mib: u32,
}

/// CPUs a quota and period amount to, rounded up: a limit of 1.5 CPUs needs 2.
fn cpus(quota: i64, period: u64) -> u32 {
    if quota <= 0 || period == 0 {
        return 0;
    }
    let quota = quota as u64;
    u32::try_from(quota.div_ceil(period)).unwrap_or(u32::MAX)
}

fn mib(bytes: i64) -> u32 {
    if bytes <= 0 {
        return 0;
    }
    u32::try_from((bytes as u64).div_ceil(MIB)).unwrap_or(u32::MAX)
}

/// The sandbox's own limits: CPUs and MiB (0 where it sets none).
fn requested(spec: &Spec, annotations: &HashMap<String, String>) -> (u32, u32) {
    let number = |key: &str| annotations.get(key).and_then(|v| v.parse::<i64>().ok());
    let from_annotations = (
        match (number(CRI_CPU_QUOTA), number(CRI_CPU_PERIOD)) {
            (Some(quota), Some(period)) if period > 0 => cpus(quota, period as u64),
            _ => 0,
        },
        number(CRI_MEMORY).map(mib).unwrap_or(0),
    );
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let cpu = resources.and_then(|r| r.cpu().as_ref());
    let from_spec = (
        cpu.and_then(|c| Some(cpus(c.quota()?, c.period()?)))
            .unwrap_or(0),
        resources
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.limit())
            .map(mib)
            .unwrap_or(0),
    );
    (
        from_annotations.0.max(from_spec.0),
        from_annotations.1.max(from_spec.1),
    )
}

/// What a container joining a running sandbox adds to its VM: its CPU limit in whole
/// vCPUs and its memory limit (the `addResources` of Kata's containers).
pub fn container_share(spec: &Spec) -> Size {
    let (vcpus, memory_mib) = requested(spec, &HashMap::new());
    Size { vcpus, memory_mib }
}

/// A container's share after `ward update` (or the shim's Update) gave it `resources`:
/// what the update names replaces what it had, the rest stays.
pub fn updated_share(previous: Size, resources: &oci_spec::runtime::LinuxResources) -> Size {
    let mut share = previous;
    if let Some(cpu) = resources.cpu() {
        if let (Some(quota), Some(period)) = (cpu.quota(), cpu.period()) {
            share.vcpus = cpus(quota, period);
        }
    }
    if let Some(limit) = resources.memory().as_ref().and_then(|m| m.limit()) {
        share.memory_mib = mib(limit);
    }
    share
}

/// The size a sandbox's VM should have: its boot size plus what each container that
/// joined it brought.
pub fn target<'a>(base: Size, added: impl IntoIterator<Item = &'a Size>) -> Size {
    added.into_iter().fold(base, |sum, share| Size {
        vcpus: sum.vcpus.saturating_add(share.vcpus),
        memory_mib: sum.memory_mib.saturating_add(share.memory_mib),
    })
}

/// Disks a growing VM may hold at once.
const DISK_SLOTS: u32 = 8;

/// The room a sandbox's VM boots with when containers will join it: up to `max_vcpus`
/// vCPUs, memory up to the host's.
pub fn room(base: Size, max_vcpus: u32, host_memory_mib: u32) -> ward_hypervisor::HotplugRoom {
    ward_hypervisor::HotplugRoom {
        max_vcpus: max_vcpus.max(base.vcpus),
        max_memory_mib: host_memory_mib.max(base.memory_mib),
        disk_slots: DISK_SLOTS,
        cpus_preallocated: false,
    }
}

/// The host's memory, MiB (0 when /proc/meminfo cannot say).
pub fn host_memory_mib() -> u32 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| u32::try_from(kib / 1024).unwrap_or(u32::MAX))
}

/// The host's CPUs.
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// The size of a new sandbox's VM: the defaults, which the guest's own processes (agent,
/// kernel) use, plus the sandbox's limits; vCPUs never more than `host_cpus`.
pub fn size(
    default: Size,
    spec: &Spec,
    annotations: &HashMap<String, String>,
    host_cpus: u32,
) -> Size {
    let (cpus, memory) = requested(spec, annotations);
    Size {
        vcpus: default
            .vcpus
            .saturating_add(cpus)
            .min(host_cpus.max(default.vcpus)),
        memory_mib: default.memory_mib.saturating_add(memory),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Size = Size {
        vcpus: 1,
        memory_mib: 256,
    };

    fn spec(resources: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"cwd": "/", "args": ["sh"], "user": {"uid": 0, "gid": 0}},
            "linux": {"resources": resources},
        }))
        .unwrap()
    }

    #[test]
    fn a_joining_container_adds_its_limits() {
        let s = spec(serde_json::json!({
            "cpu": {"quota": 200000, "period": 100000},
            "memory": {"limit": 64 * 1024 * 1024},
        }));
        let share = container_share(&s);
        assert_eq!(
            share,
            Size {
                vcpus: 2,
                memory_mib: 64
            }
        );
        assert_eq!(
            target(DEFAULT, [&share, &share]),
            Size {
                vcpus: 5,
                memory_mib: 384
            }
        );
        assert_eq!(target(DEFAULT, []), DEFAULT);
    }

    #[test]
    fn an_update_replaces_what_it_names() {
        let before = Size {
            vcpus: 2,
            memory_mib: 64,
        };
        let resources: oci_spec::runtime::LinuxResources =
            serde_json::from_value(serde_json::json!({"cpu": {"quota": 300000, "period": 100000}}))
                .unwrap();
        assert_eq!(
            updated_share(before, &resources),
            Size {
                vcpus: 3,
                memory_mib: 64
            }
        );
        let unlimited: oci_spec::runtime::LinuxResources =
            serde_json::from_value(serde_json::json!({"cpu": {"quota": -1, "period": 100000}}))
                .unwrap();
        assert_eq!(
            updated_share(before, &unlimited),
            Size {
                vcpus: 0,
                memory_mib: 64
            }
        );
    }

    #[test]
    fn no_limits_mean_the_defaults() {
        let size = size(DEFAULT, &spec(serde_json::json!({})), &HashMap::new(), 8);
        assert_eq!(size, DEFAULT);
    }

    #[test]
    fn the_specs_limits_are_added_rounded_up() {
        let s = spec(serde_json::json!({
            "cpu": {"quota": 150000, "period": 100000},
            "memory": {"limit": 100 * 1024 * 1024 + 1},
        }));
        let size = size(DEFAULT, &s, &HashMap::new(), 8);
        assert_eq!(
            size,
            Size {
                vcpus: 3,
                memory_mib: 256 + 101
            }
        );
    }

    #[test]
    fn cri_sandbox_annotations_count_and_vcpus_stop_at_the_hosts() {
        let annotations: HashMap<String, String> = [
            (CRI_CPU_QUOTA, "800000"),
            (CRI_CPU_PERIOD, "100000"),
            (CRI_MEMORY, "536870912"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let size = size(DEFAULT, &spec(serde_json::json!({})), &annotations, 4);
        assert_eq!(
            size,
            Size {
                vcpus: 4,
                memory_mib: 256 + 512
            }
        );
    }

    #[test]
    fn unlimited_and_garbage_values_add_nothing() {
        let s = spec(
            serde_json::json!({"cpu": {"quota": -1, "period": 100000}, "memory": {"limit": -1}}),
        );
        let annotations: HashMap<String, String> = [(CRI_MEMORY, "lots")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(size(DEFAULT, &s, &annotations, 8), DEFAULT);
    }
}
