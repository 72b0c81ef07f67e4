//! Records of host processes that outlive the `ward` command that started them.
//!
//! A PID alone is not an identity: after a crash and a reboot-free PID wrap, the same number
//! may name another program. A record pairs the PID with the process's start time (field 22
//! of /proc/PID/stat, in clock ticks since boot), and every check and signal goes through
//! [`ProcessRecord::is_alive`], which compares both.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// What the process is, for logs: "qemu", "vhost-device-vsock", "relay".
    pub name: String,
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessRecord {
    /// Records the live process `pid`; `None` if it has already gone.
    pub fn of(name: &str, pid: i32) -> Option<Self> {
        Some(ProcessRecord {
            name: name.to_string(),
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// True while the very process recorded runs (a zombie counts as gone).
    pub fn is_alive(&self) -> bool {
        match stat_fields(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }

    /// Sends `signal` if the recorded process still runs; true if it was sent.
    pub fn signal(&self, signal: Signal) -> bool {
        self.is_alive() && kill(Pid::from_raw(self.pid), signal).is_ok()
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL and waits until it is gone (or 5 s).
    /// Returns true when the process is gone.
    pub fn terminate(&self, grace: Duration) -> bool {
        if self.signal(Signal::SIGTERM) && self.wait_gone(grace) {
            return true;
        }
        self.signal(Signal::SIGKILL);
        self.wait_gone(Duration::from_secs(5))
    }

    /// Waits until the process is gone; true if it went within `timeout`.
    pub fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            reap(self.pid);
            if !self.is_alive() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Collects `pid` if it is our exited child, so it does not linger as a zombie.
fn reap(pid: i32) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
}

/// The start time of `pid` in clock ticks since boot.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid).map(|(_, start)| start)
}

/// (state, start time) from /proc/PID/stat. The command name may contain spaces and
/// parentheses, so fields are counted from the last ')'.
fn stat_fields(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state (field 3) the start time is field 22: 18 fields further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_stat(stat), Some(('S', 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn records_this_process_and_notices_a_dead_one() {
        let me = ProcessRecord::of("test", std::process::id() as i32).expect("we run");
        assert!(me.is_alive());
        let other = ProcessRecord {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(
            !other.is_alive(),
            "same PID, other start time: another process"
        );

        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let record = ProcessRecord::of("true", child.id() as i32);
        child.wait().expect("wait true");
        if let Some(record) = record {
            assert!(!record.is_alive());
        }
    }
}
