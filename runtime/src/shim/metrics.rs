//! The guest's cgroup v2 numbers (the agent's StatsContainer) as containerd's cgroup v2
//! metrics (`io.containerd.cgroups.v2.Metrics`), the type `ctr task metrics` and the CRI
//! plugin decode for a cgroup v2 host.

use std::collections::HashMap;

use containerd_shim::protos::cgroups_v2::metrics::{CPUStat, MemoryStat, Metrics, PidsStat};
use ward_agent_protocol::agent::StatsContainerResponse;

/// The agent reports "max" as 0; the cgroups library containerd uses reports u64::MAX.
fn limit(value: u64) -> u64 {
    if value == 0 {
        u64::MAX
    } else {
        value
    }
}

fn key(map: &HashMap<String, u64>, name: &str) -> u64 {
    map.get(name).copied().unwrap_or(0)
}

pub fn from_guest(stats: &StatsContainerResponse) -> Metrics {
    let cpu_stat = &stats.cpu_stat;
    let cpu = CPUStat {
        usage_usec: key(cpu_stat, "usage_usec"),
        user_usec: key(cpu_stat, "user_usec"),
        system_usec: key(cpu_stat, "system_usec"),
        nr_periods: key(cpu_stat, "nr_periods"),
        nr_throttled: key(cpu_stat, "nr_throttled"),
        throttled_usec: key(cpu_stat, "throttled_usec"),
        nr_bursts: key(cpu_stat, "nr_bursts"),
        burst_usec: key(cpu_stat, "burst_usec"),
        ..Default::default()
    };
    let m = &stats.memory_stat;
    let memory = MemoryStat {
        usage: stats.memory_current,
        usage_limit: limit(stats.memory_max),
        max_usage: stats.memory_peak,
        anon: key(m, "anon"),
        file: key(m, "file"),
        kernel_stack: key(m, "kernel_stack"),
        slab: key(m, "slab"),
        sock: key(m, "sock"),
        shmem: key(m, "shmem"),
        file_mapped: key(m, "file_mapped"),
        file_dirty: key(m, "file_dirty"),
        file_writeback: key(m, "file_writeback"),
        anon_thp: key(m, "anon_thp"),
        inactive_anon: key(m, "inactive_anon"),
        active_anon: key(m, "active_anon"),
        inactive_file: key(m, "inactive_file"),
        active_file: key(m, "active_file"),
        unevictable: key(m, "unevictable"),
        slab_reclaimable: key(m, "slab_reclaimable"),
        slab_unreclaimable: key(m, "slab_unreclaimable"),
        pgfault: key(m, "pgfault"),
        pgmajfault: key(m, "pgmajfault"),
        // Kernels since 5.9 split these by anon/file; the sum is the old counter.
        workingset_refault: key(m, "workingset_refault")
            + key(m, "workingset_refault_anon")
            + key(m, "workingset_refault_file"),
        workingset_activate: key(m, "workingset_activate")
            + key(m, "workingset_activate_anon")
            + key(m, "workingset_activate_file"),
        workingset_nodereclaim: key(m, "workingset_nodereclaim"),
        pgrefill: key(m, "pgrefill"),
        pgscan: key(m, "pgscan"),
        pgsteal: key(m, "pgsteal"),
        pgactivate: key(m, "pgactivate"),
        pgdeactivate: key(m, "pgdeactivate"),
        pglazyfree: key(m, "pglazyfree"),
        pglazyfreed: key(m, "pglazyfreed"),
        thp_fault_alloc: key(m, "thp_fault_alloc"),
        thp_collapse_alloc: key(m, "thp_collapse_alloc"),
        ..Default::default()
    };
    let pids = PidsStat {
        current: stats.pids_current,
        limit: limit(stats.pids_max),
        ..Default::default()
    };
    Metrics {
        pids: Some(pids).into(),
        cpu: Some(cpu).into(),
        memory: Some(memory).into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::MessageFull;

    #[test]
    fn guest_numbers_land_in_the_v2_fields() {
        let mut stats = StatsContainerResponse::new();
        stats.cpu_stat.insert("usage_usec".into(), 1500);
        stats.cpu_stat.insert("user_usec".into(), 1000);
        stats.memory_current = 4 << 20;
        stats.memory_max = 0;
        stats.memory_peak = 5 << 20;
        stats.memory_stat.insert("anon".into(), 123);
        stats
            .memory_stat
            .insert("workingset_refault_anon".into(), 2);
        stats
            .memory_stat
            .insert("workingset_refault_file".into(), 3);
        stats.pids_current = 2;
        stats.pids_max = 100;
        let m = from_guest(&stats);
        assert_eq!(m.cpu.usage_usec, 1500);
        assert_eq!(m.cpu.user_usec, 1000);
        assert_eq!(m.memory.usage, 4 << 20);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(m.memory.max_usage, 5 << 20);
        assert_eq!(m.memory.anon, 123);
        assert_eq!(m.memory.workingset_refault, 5);
        assert_eq!((m.pids.current, m.pids.limit), (2, 100));
        // The type URL containerd's typeurl resolves.
        assert_eq!(
            Metrics::descriptor().full_name(),
            "io.containerd.cgroups.v2.Metrics"
        );
    }
}
