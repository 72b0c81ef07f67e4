//! A sandbox's VM is sized from the sandbox's own limits plus ward's defaults: a container
//! limited to 256 MiB boots a VM with that much more memory than the defaults give, so the
//! guest's own processes never compete with the container for its limit.

use ward_e2e::{text, Ward};

/// MemTotal of /proc/meminfo, in KiB.
fn mem_total_kib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in {meminfo}"))
}

fn run_meminfo(ward: &Ward, id: &str, limit: Option<u64>) -> u64 {
    let bundle = ward.bundle(id, &["cat", "/proc/meminfo"]);
    if let Some(limit) = limit {
        let path = bundle.join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        spec["linux"]["resources"]["memory"] = serde_json::json!({ "limit": limit });
        std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    }
    let out = ward.run(&["run", "--bundle", bundle.to_str().unwrap(), id]);
    assert!(out.status.success(), "run {id}: {}", text(&out.stderr));
    mem_total_kib(&text(&out.stdout))
}

#[test]
fn a_memory_limit_grows_the_vm() {
    let ward = Ward::new();
    let plain = run_meminfo(&ward, "plain", None);
    let limited = run_meminfo(&ward, "limited", Some(256 * 1024 * 1024));
    let grown = limited.saturating_sub(plain);
    eprintln!("MemTotal: {plain} KiB without a limit, {limited} KiB with 256 MiB");
    // The kernel keeps a little of the added memory for its page tables: allow 8 MiB.
    assert!(
        (256 * 1024 - 8 * 1024..=256 * 1024).contains(&grown),
        "MemTotal grew by {grown} KiB ({plain} -> {limited})"
    );
}
