//! The host around the VMs: its cgroup layout, user namespaces, and memory for guests.

use super::report::Item;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// /sys/fs/cgroup is cgroup2.
    V2,
    /// v1 controllers, plus a cgroup2 hierarchy (usually /sys/fs/cgroup/unified).
    Hybrid,
    V1,
    /// No cgroup filesystem mounted.
    None,
}

/// The layout that /proc/mounts (or /proc/self/mounts) describes.
pub fn cgroup_layout(mounts: &str) -> CgroupLayout {
    let mut v1 = false;
    let mut v2_elsewhere = false;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_), Some(target), Some(fstype)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        match fstype {
            "cgroup2" if target == "/sys/fs/cgroup" => return CgroupLayout::V2,
            "cgroup2" => v2_elsewhere = true,
            "cgroup" => v1 = true,
            _ => {}
        }
    }
    match (v1, v2_elsewhere) {
        (true, true) => CgroupLayout::Hybrid,
        (true, false) => CgroupLayout::V1,
        (false, true) => CgroupLayout::V2,
        (false, false) => CgroupLayout::None,
    }
}

fn cgroups(mounts: &str) -> Item {
    // The containers' cgroups live in the guest; on the host, each sandbox's VM processes
    // go into a cgroup of their own (runtime/src/sandbox/host_cgroup.rs), which any
    // layout serves: the item says which one this is.
    const HOST_CGROUP: &str = "containers' cgroups live in the guest (v2); each sandbox's VM \
         processes share a host cgroup";
    match cgroup_layout(mounts) {
        CgroupLayout::V2 => Item::pass("host.cgroup", "cgroup v2 (unified)")
            .detail(format!("{HOST_CGROUP} (memory, cpu, pids)")),
        CgroupLayout::Hybrid => Item::pass(
            "host.cgroup",
            "hybrid: cgroup v1 controllers with a cgroup2 hierarchy beside them",
        )
        .detail(format!(
            "{HOST_CGROUP} in the v1 memory, cpu, cpuacct and pids hierarchies"
        )),
        CgroupLayout::V1 => Item::pass("host.cgroup", "cgroup v1").detail(format!(
            "{HOST_CGROUP} in the v1 memory, cpu, cpuacct and pids hierarchies"
        )),
        CgroupLayout::None => Item::fail(
            "host.cgroup",
            "no cgroup filesystem is mounted: ward cannot bound a sandbox's VM processes",
            "mount cgroup2 on /sys/fs/cgroup",
        ),
    }
}

/// `max`: /proc/sys/user/max_user_namespaces; `unprivileged`:
/// /proc/sys/kernel/unprivileged_userns_clone where the kernel has it (Debian's patch).
pub fn user_namespaces(max: Option<&str>, unprivileged: Option<&str>) -> Item {
    let max = max.and_then(|m| m.trim().parse::<u64>().ok());
    let unprivileged = unprivileged.map(str::trim);
    match (max, unprivileged) {
        (None, _) => Item::warn(
            "host.userns",
            "this kernel has no user namespaces (no /proc/sys/user/max_user_namespaces)",
            "rootless engines need them; ward as root does not",
        ),
        (Some(0), _) => Item::warn(
            "host.userns",
            "user namespaces are disabled (user.max_user_namespaces = 0)",
            "sysctl -w user.max_user_namespaces=15000 (rootless engines need them)",
        ),
        (Some(n), Some("0")) => Item::warn(
            "host.userns",
            format!("user namespaces: up to {n}, but not for unprivileged users"),
            "sysctl -w kernel.unprivileged_userns_clone=1 (rootless engines need it)",
        ),
        (Some(n), _) => Item::pass(
            "host.userns",
            format!("user namespaces enabled (up to {n})"),
        ),
    }
}

/// MemAvailable from /proc/meminfo, in MiB.
pub fn available_mib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemAvailable:")?;
        let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kib / 1024)
    })
}

pub fn memory(meminfo: &str, guest_mib: u32) -> Item {
    let guest = u64::from(guest_mib);
    match available_mib(meminfo) {
        None => Item::warn(
            "host.memory",
            "cannot read MemAvailable from /proc/meminfo",
            format!("make sure {guest} MiB (guest.memory_mib) are free per container"),
        ),
        Some(free) if free < guest => Item::fail(
            "host.memory",
            format!("{free} MiB available, less than one guest's {guest} MiB (guest.memory_mib)"),
            "free memory, or lower guest.memory_mib",
        ),
        Some(free) if free < guest * 4 => Item::warn(
            "host.memory",
            format!(
                "{free} MiB available: room for {} guests of {guest} MiB",
                free / guest
            ),
            "free memory, or lower guest.memory_mib",
        ),
        Some(free) => Item::pass(
            "host.memory",
            format!(
                "{free} MiB available: room for about {} guests of {guest} MiB",
                free / guest
            ),
        ),
    }
}

pub fn check(
    mounts: &str,
    max_userns: Option<&str>,
    unprivileged_userns: Option<&str>,
    meminfo: &str,
    guest_mib: u32,
) -> Vec<Item> {
    vec![
        cgroups(mounts),
        user_namespaces(max_userns, unprivileged_userns),
        memory(meminfo, guest_mib),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::report::Status;

    const V1: &str = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
    const HYBRID: &str = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
    const V2: &str = "proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";

    #[test]
    fn cgroup_layouts() {
        assert_eq!(cgroup_layout(V1), CgroupLayout::V1);
        assert_eq!(cgroup_layout(HYBRID), CgroupLayout::Hybrid);
        assert_eq!(cgroup_layout(V2), CgroupLayout::V2);
        assert_eq!(
            cgroup_layout("proc /proc proc rw 0 0\n"),
            CgroupLayout::None
        );
        assert_eq!(cgroups(HYBRID).status, Status::Pass);
        assert_eq!(cgroups("").status, Status::Fail);
    }

    #[test]
    fn user_namespace_settings() {
        assert_eq!(user_namespaces(Some("96365\n"), None).status, Status::Pass);
        assert_eq!(user_namespaces(Some("0\n"), None).status, Status::Warn);
        assert_eq!(
            user_namespaces(Some("100"), Some("0\n")).status,
            Status::Warn
        );
        assert_eq!(
            user_namespaces(Some("100"), Some("1\n")).status,
            Status::Pass
        );
        assert_eq!(user_namespaces(None, None).status, Status::Warn);
    }

    #[test]
    fn memory_against_the_guest_size() {
        let meminfo = |kib: u64| format!("MemTotal: 99999999 kB\nMemAvailable:   {kib} kB\n");
        assert_eq!(available_mib(&meminfo(2048 * 1024)), Some(2048));
        assert_eq!(memory(&meminfo(4096 * 1024), 256).status, Status::Pass);
        assert_eq!(memory(&meminfo(600 * 1024), 256).status, Status::Warn);
        assert_eq!(memory(&meminfo(100 * 1024), 256).status, Status::Fail);
        assert_eq!(memory("", 256).status, Status::Warn);
    }
}
