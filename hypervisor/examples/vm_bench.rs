//! Boot benchmark of the backends, run by `tools/bench`: for each backend, boots ward's
//! guest (kernel + initramfs with the agent) `--runs` times and reports
//! - the time from launch to the guest's first serial byte,
//! - the time from launch to the agent accepting a vsock connection on its port,
//! - the VMM process's memory once the agent is up: VmRSS, the guest memory it has
//!   touched (RssShmem: both backends back guest RAM with a memfd) and the rest, the
//!   VMM's own overhead (RssAnon + RssFile).
//!
//! ```text
//! cargo run --release -p ward-hypervisor --example vm_bench -- \
//!     --kernel build/guest/vmlinux --initrd build/guest/initrd.img \
//!     [--backends builtin,qemu] [--runs 3] [--memory 256] [--vcpus 1] [--json FILE]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ward_hypervisor::{backend_of, BackendKind, HypervisorConfig, VmConfig};

/// The agent's ttrpc port (ward_agent_protocol::AGENT_VSOCK_PORT).
const AGENT_PORT: u32 = 1024;
/// Emulated KVM boots take minutes here; give up after this.
const BOOT_LIMIT: Duration = Duration::from_secs(600);

struct Options {
    kernel: PathBuf,
    initrd: PathBuf,
    backends: Vec<BackendKind>,
    runs: usize,
    memory_mib: u32,
    vcpus: u32,
    json: Option<PathBuf>,
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        kernel: "build/guest/vmlinux".into(),
        initrd: "build/guest/initrd.img".into(),
        backends: vec![BackendKind::Builtin, BackendKind::Qemu],
        runs: 3,
        memory_mib: 256,
        vcpus: 1,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--kernel" => o.kernel = value.into(),
            "--initrd" => o.initrd = value.into(),
            "--runs" => o.runs = value.parse().map_err(|e| format!("--runs: {e}"))?,
            "--memory" => o.memory_mib = value.parse().map_err(|e| format!("--memory: {e}"))?,
            "--vcpus" => o.vcpus = value.parse().map_err(|e| format!("--vcpus: {e}"))?,
            "--json" => o.json = Some(value.into()),
            "--backends" => {
                o.backends = value
                    .split(',')
                    .map(|b| match b {
                        "builtin" => Ok(BackendKind::Builtin),
                        "qemu" => Ok(BackendKind::Qemu),
                        other => Err(format!("unknown backend {other}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    first_serial_ms: Option<u64>,
    /// None: the guest never got there (`failure` says why).
    agent_ready_ms: Option<u64>,
    failure: Option<String>,
    vmm_rss_kib: u64,
    guest_touched_kib: u64,
    vmm_overhead_kib: u64,
    /// What the backend decided, e.g. "qemu microvm kvm".
    vm: String,
}

/// `key:   N kB` from /proc/PID/status.
fn status_kib(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn boot_once(kind: BackendKind, o: &Options, n: usize) -> Result<Sample, String> {
    let hypervisor =
        backend_of(kind, &HypervisorConfig::default()).map_err(|e| format!("{kind}: {e}"))?;
    let run_dir = PathBuf::from(format!("/tmp/ward-bench-{kind}-{n}"));
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let config = VmConfig {
        id: format!("bench-{kind}-{n}"),
        run_dir: run_dir.clone(),
        kernel: o.kernel.clone(),
        initrd: o.initrd.clone(),
        extra_kernel_params: String::new(),
        vcpus: o.vcpus,
        memory_mib: o.memory_mib,
        shared_dirs: Vec::new(),
        hotplug: None,
        host_cgroups: Vec::new(),
        nics: Vec::new(),
    };
    let start = Instant::now();
    let vm = hypervisor
        .launch(&config)
        .map_err(|e| format!("{kind}: launch: {e}"))?;
    // Watched on its own thread: a vsock connect may block while the guest boots.
    let console = vm.console_log.clone();
    let serial_watch = std::thread::spawn(move || loop {
        if std::fs::metadata(&console).is_ok_and(|m| m.len() > 0) {
            return Some(start.elapsed());
        }
        if start.elapsed() > BOOT_LIMIT {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    });
    let mut serial_watch = Some(serial_watch);
    // The VMM's memory, sampled while it runs: the last sample stands for a guest that
    // dies before its agent is up.
    let pid = vm.processes[0].pid;
    let mut last_rss = (0, 0);
    let description = vm.description.clone();
    let sample = |serial_watch: &mut Option<std::thread::JoinHandle<Option<Duration>>>,
                  agent: Option<Duration>,
                  rss: (u64, u64),
                  failure: Option<String>| {
        let first_serial = serial_watch.take().and_then(|w| w.join().ok().flatten());
        Sample {
            first_serial_ms: first_serial.map(|d| d.as_millis() as u64),
            agent_ready_ms: agent.map(|d| d.as_millis() as u64),
            failure,
            vmm_rss_kib: rss.0,
            guest_touched_kib: rss.1,
            vmm_overhead_kib: rss.0.saturating_sub(rss.1),
            vm: description.clone(),
        }
    };
    let result = loop {
        let now = start.elapsed();
        if hypervisor.connect(&vm, AGENT_PORT).is_ok() {
            let now = start.elapsed();
            let rss = (status_kib(pid, "VmRSS"), status_kib(pid, "RssShmem"));
            break Ok(sample(&mut serial_watch, Some(now), rss, None));
        }
        if hypervisor.is_running(&vm) {
            let rss = (status_kib(pid, "VmRSS"), status_kib(pid, "RssShmem"));
            if rss.0 > 0 {
                last_rss = rss;
            }
        } else {
            let tail = ward_hypervisor::console_tail(&vm.console_log, 20);
            if std::fs::metadata(&vm.console_log).is_ok_and(|m| m.len() > 0) {
                // It booted far enough to print: report that much, and why it stopped.
                let why = tail
                    .lines()
                    .find(|l| l.contains("segfault") || l.contains("panic"))
                    .unwrap_or("the VM exited")
                    .to_string();
                break Ok(sample(&mut serial_watch, None, last_rss, Some(why)));
            }
            break Err(format!("{kind}: the VM exited; console:\n{tail}"));
        }
        if now > BOOT_LIMIT {
            break Err(format!("{kind}: no agent after {} s", BOOT_LIMIT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = hypervisor.shutdown(&vm, Duration::from_secs(3));
    let _ = std::fs::remove_dir_all(&run_dir);
    result
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn main() -> ExitCode {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vm_bench: {e}");
            return ExitCode::from(2);
        }
    };
    let mut report = serde_json::Map::new();
    println!(
        "{:<8} {:>4} {:>14} {:>14} {:>12} {:>14} {:>14}",
        "backend",
        "runs",
        "first-serial",
        "agent-ready",
        "VMM RSS",
        "guest touched",
        "VMM overhead"
    );
    let mut failed = false;
    let mut medians = Vec::new();
    for kind in &o.backends {
        let mut samples = Vec::new();
        for n in 0..o.runs {
            match boot_once(*kind, &o, n) {
                Ok(s) => samples.push(s),
                Err(e) => {
                    eprintln!("vm_bench: {e}");
                    failed = true;
                    break;
                }
            }
        }
        if samples.is_empty() {
            continue;
        }
        let pick = |f: fn(&Sample) -> u64| median(samples.iter().map(f).collect());
        let serial = pick(|s| s.first_serial_ms.unwrap_or(0));
        let ready: Vec<u64> = samples.iter().filter_map(|s| s.agent_ready_ms).collect();
        let agent = (!ready.is_empty()).then(|| median(ready));
        let rss = pick(|s| s.vmm_rss_kib);
        let touched = pick(|s| s.guest_touched_kib);
        let overhead = pick(|s| s.vmm_overhead_kib);
        let agent_text = agent.map_or("never".to_string(), |ms| format!("{ms} ms"));
        println!(
            "{:<8} {:>4} {:>11} ms {:>14} {:>8} KiB {:>10} KiB {:>10} KiB",
            kind.as_str(),
            samples.len(),
            serial,
            agent_text,
            rss,
            touched,
            overhead
        );
        println!("         ({})", samples[0].vm);
        for failure in samples.iter().filter_map(|s| s.failure.as_deref()) {
            println!("         the guest stopped before its agent: {failure}");
        }
        medians.push((*kind, serial, agent, overhead));
        report.insert(
            kind.as_str().to_string(),
            serde_json::json!({
                "runs": samples,
                "median": {
                    "first_serial_ms": serial,
                    "agent_ready_ms": agent,
                    "vmm_rss_kib": rss,
                    "guest_touched_kib": touched,
                    "vmm_overhead_kib": overhead,
                },
            }),
        );
    }
    // Absolute times depend on the machine (and mean nothing in L1): the ratio between
    // backends measured in the same run is the number to read.
    let of = |kind| medians.iter().find(|m| m.0 == kind).copied();
    if let (Some(b), Some(q)) = (of(BackendKind::Builtin), of(BackendKind::Qemu)) {
        let ratio = |x: u64, y: u64| {
            if y == 0 {
                "n/a".to_string()
            } else {
                format!("{:.2}", x as f64 / y as f64)
            }
        };
        let agent = match (b.2, q.2) {
            (Some(x), Some(y)) => ratio(x, y),
            _ => "n/a".to_string(),
        };
        println!(
            "builtin/qemu: first-serial {}, agent-ready {}, VMM overhead {}",
            ratio(b.1, q.1),
            agent,
            ratio(b.3, q.3)
        );
        report.insert(
            "builtin_over_qemu".into(),
            serde_json::json!({
                "first_serial": ratio(b.1, q.1),
                "agent_ready": agent,
                "vmm_overhead": ratio(b.3, q.3),
            }),
        );
    }
    if let Some(path) = &o.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("vm_bench: writing {}: {e}", path.display());
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
