//! What a VM that failed under a running command left behind. A dropped agent connection
//! says only "socket disconnected"; the cause is in the VMM's or a helper's log (a seccomp
//! trap, a crash) or on the guest console, so errors about a lost VM carry their ends.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{console_tail, Hypervisor, ProcessRecord, VmInstance};

/// Lines shown from each log.
const TAIL_LINES: usize = 12;
/// A dying process closes its sockets before it becomes a zombie: the connection's end
/// can be seen a moment before the process reads as gone.
const DYING_GRACE: Duration = Duration::from_secs(1);

/// Where to look once a VM stops answering; taken while it runs, read after it failed.
#[derive(Debug, Clone)]
pub struct PostMortem {
    processes: Vec<ProcessRecord>,
    logs: Vec<PathBuf>,
    console: PathBuf,
}

impl PostMortem {
    pub fn of(hypervisor: &dyn Hypervisor, vm: &VmInstance) -> PostMortem {
        PostMortem {
            processes: vm.processes.clone(),
            logs: hypervisor.logs(vm),
            console: vm.console_log.clone(),
        }
    }

    /// None while every host process of the VM runs (the failure lies elsewhere);
    /// otherwise which of them have exited, and the ends of their logs and the console.
    pub fn report(&self) -> Option<String> {
        self.report_within(DYING_GRACE)
    }

    fn report_within(&self, grace: Duration) -> Option<String> {
        let deadline = Instant::now() + grace;
        let gone: Vec<String> = loop {
            let gone: Vec<String> = self
                .processes
                .iter()
                .filter(|p| !p.is_alive())
                .map(|p| format!("{} (pid {})", p.name, p.pid))
                .collect();
            if !gone.is_empty() {
                break gone;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut report = format!("the VM is gone: {} exited", gone.join(", "));
        for log in self.logs.iter().chain([&self.console]) {
            let tail = console_tail(log, TAIL_LINES);
            if !tail.trim().is_empty() {
                report.push_str(&format!("\n{} ends with:\n{tail}", log.display()));
            }
        }
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited_process() -> ProcessRecord {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let record = ProcessRecord::of("ward-vmm", child.id() as i32).unwrap();
        child.wait().unwrap();
        record
    }

    #[test]
    fn a_running_vm_has_nothing_to_report() {
        let me = ProcessRecord::of("ward-vmm", std::process::id() as i32).unwrap();
        let pm = PostMortem {
            processes: vec![me],
            logs: vec![],
            console: PathBuf::from("/nonexistent/console.log"),
        };
        assert!(pm.report_within(Duration::from_millis(50)).is_none());
    }

    #[test]
    fn a_dead_vmm_is_named_with_the_end_of_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("vmm.log");
        let console = dir.path().join("console.log");
        std::fs::write(
            &log,
            "started\nward-vmm: seccomp: the vcpu thread made system call 332\n",
        )
        .unwrap();
        std::fs::write(&console, "agent ready\n").unwrap();
        let process = exited_process();
        let pid = process.pid;
        let pm = PostMortem {
            processes: vec![process],
            logs: vec![log.clone()],
            console: console.clone(),
        };
        let report = pm.report().expect("a report");
        assert!(
            report.starts_with(&format!("the VM is gone: ward-vmm (pid {pid}) exited")),
            "{report}"
        );
        assert!(
            report.contains(&format!(
                "{} ends with:\nstarted\nward-vmm: seccomp",
                log.display()
            )),
            "{report}"
        );
        assert!(report.contains("agent ready"), "{report}");
    }
}
