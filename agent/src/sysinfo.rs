//! GetGuestDetails: kernel, memory and CPUs of the guest, from uname and /proc and /sys.

use thiserror::Error;
use ttrpc::Code;
use ward_agent_protocol::agent::GuestDetails;
use ward_agent_protocol::{AGENT_VERSION, PROTOCOL_VERSION};

use crate::error::Coded;

#[derive(Debug, Error)]
pub enum SysinfoError {
    #[error("reading {path}: {source}")]
    Read {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("{0} has no {1} line")]
    Missing(&'static str, &'static str),
}

impl Coded for SysinfoError {
    fn code(&self) -> Code {
        Code::INTERNAL
    }
}

/// A `Key:   123 kB` line of /proc/meminfo, in bytes.
pub fn meminfo_bytes(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        if k != key {
            return None;
        }
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        let scale = match words.next() {
            Some("kB") => 1024,
            None => 1,
            Some(_) => return None,
        };
        value.checked_mul(scale)
    })
}

/// Counts the CPUs of a /sys/devices/system/cpu/online list ("0-3,5").
pub fn count_cpu_list(list: &str) -> Option<u32> {
    u32::try_from(cpu_list_ids(list)?.len()).ok()
}

/// The most CPUs a list may name: Linux's NR_CPUS ceiling on x86_64.
const MAX_CPUS: u32 = 8192;

/// The CPU numbers of a sysfs CPU list ("0-1,4,6-7"), in order.
pub fn cpu_list_ids(list: &str) -> Option<Vec<u32>> {
    let mut ids = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse::<u32>().ok()?, hi.parse::<u32>().ok()?),
            None => {
                let n = part.parse::<u32>().ok()?;
                (n, n)
            }
        };
        if lo > hi || hi >= MAX_CPUS {
            return None;
        }
        ids.extend(lo..=hi);
    }
    Some(ids)
}

fn read(path: &'static str) -> Result<String, SysinfoError> {
    std::fs::read_to_string(path).map_err(|source| SysinfoError::Read { path, source })
}

pub fn guest_details() -> Result<GuestDetails, SysinfoError> {
    let uts = nix::sys::utsname::uname().map_err(|e| SysinfoError::Read {
        path: "uname",
        source: e.into(),
    })?;
    let meminfo = read("/proc/meminfo")?;
    let online = read("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|l| count_cpu_list(&l))
        // SAFETY: sysconf has no memory arguments.
        .unwrap_or_else(|| unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32);
    let mut details = GuestDetails::new();
    details.kernel_release = uts.release().to_string_lossy().into_owned();
    details.kernel_version = uts.version().to_string_lossy().into_owned();
    details.agent_version = AGENT_VERSION.to_string();
    details.protocol_version = PROTOCOL_VERSION;
    details.memory_total_bytes = meminfo_bytes(&meminfo, "MemTotal")
        .ok_or(SysinfoError::Missing("/proc/meminfo", "MemTotal"))?;
    details.memory_available_bytes = meminfo_bytes(&meminfo, "MemAvailable")
        .ok_or(SysinfoError::Missing("/proc/meminfo", "MemAvailable"))?;
    details.online_cpus = online;
    Ok(details)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_lines_parse() {
        let text = "MemTotal:         247316 kB\nMemFree:  1 kB\nMemAvailable:     200000 kB\nHugePages_Total:       0\n";
        assert_eq!(meminfo_bytes(text, "MemTotal"), Some(247316 * 1024));
        assert_eq!(meminfo_bytes(text, "MemAvailable"), Some(200000 * 1024));
        assert_eq!(meminfo_bytes(text, "HugePages_Total"), Some(0));
        assert_eq!(meminfo_bytes(text, "Mem"), None);
    }

    #[test]
    fn cpu_lists_count() {
        assert_eq!(count_cpu_list("0\n"), Some(1));
        assert_eq!(count_cpu_list("0-3"), Some(4));
        assert_eq!(count_cpu_list("0-1,4,6-7\n"), Some(5));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
        assert_eq!(count_cpu_list("0-99999999"), None);
        assert_eq!(cpu_list_ids("0-1,4,6-7\n"), Some(vec![0, 1, 4, 6, 7]));
        assert_eq!(cpu_list_ids(""), Some(vec![]));
    }

    #[test]
    fn this_machine_has_details() {
        let details = guest_details().unwrap();
        assert!(details.memory_total_bytes > 0);
        assert!(details.online_cpus >= 1);
        assert!(!details.kernel_release.is_empty());
    }
}
