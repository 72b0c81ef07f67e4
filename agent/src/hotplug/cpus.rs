//! vCPUs: Linux registers a hot-added CPU as present but leaves it offline (no udev rule
//! here to online it), and offlines a CPU itself when the VMM asks it to eject one.

use std::path::Path;
use std::time::Instant;

use super::{read, HotplugError, POLL};
use crate::sysinfo::cpu_list_ids;

/// Onlines every present CPU that is offline until `want` are online, waiting for
/// hot-added ones to appear and ejected ones to go, until `deadline`. Returns the online
/// list.
/// With `offline_surplus`, the highest online CPUs beyond `want` (never CPU 0) are taken
/// offline instead of waiting for the VMM to eject them.
pub fn online_cpus(
    sys: &Path,
    want: u32,
    offline_surplus: bool,
    deadline: Instant,
) -> Result<String, HotplugError> {
    if want == 0 || want > 8192 {
        return Err(HotplugError::BadCount(want));
    }
    let cpu_dir = sys.join("devices/system/cpu");
    let started = Instant::now();
    loop {
        let online_text = read(&cpu_dir.join("online"))?;
        let online = list(&cpu_dir.join("online"), &online_text)?;
        let present_text = read(&cpu_dir.join("present"))?;
        if online.len() == want as usize {
            return Ok(online_text.trim().to_string());
        }
        // Fewer than wanted: online the lowest offline ones. More: the VMM is ejecting
        // some, and Linux offlines them itself; onlining any now would fight the eject.
        if online.len() < want as usize {
            let missing = want as usize - online.len();
            let offline = list(&cpu_dir.join("present"), &present_text)?
                .into_iter()
                .filter(|id| !online.contains(id));
            for id in offline.take(missing) {
                set_online(&cpu_dir.join(format!("cpu{id}/online")), true)?;
            }
        } else if offline_surplus {
            let surplus = online.len() - want as usize;
            for id in online.iter().rev().filter(|id| **id != 0).take(surplus) {
                set_online(&cpu_dir.join(format!("cpu{id}/online")), false)?;
            }
        }
        if Instant::now() >= deadline {
            return Err(HotplugError::CpusTimeout {
                want,
                waited: started.elapsed(),
                online: online_text.trim().to_string(),
                present: present_text.trim().to_string(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Writes 1 or 0 to a CPU's `online` file. A CPU that is being registered or unregistered
/// right now may have no file, or answer ENODEV: the next round looks again.
fn set_online(file: &Path, online: bool) -> Result<(), HotplugError> {
    let value = if online { "1" } else { "0" };
    match std::fs::write(file, value) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENODEV)) => Ok(()),
        Err(source) => Err(HotplugError::Write {
            path: file.to_path_buf(),
            value: value.into(),
            source,
        }),
    }
}

fn list(path: &Path, text: &str) -> Result<Vec<u32>, HotplugError> {
    cpu_list_ids(text).ok_or_else(|| HotplugError::Parse {
        path: path.to_path_buf(),
        text: text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::time::Duration;

    /// A sysfs CPU tree with `present` CPUs, of which those in `online` are online.
    fn tree(present: &str, online: &[(u32, bool)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join("devices/system/cpu");
        fs::create_dir_all(&cpu).unwrap();
        fs::write(cpu.join("present"), format!("{present}\n")).unwrap();
        for &(id, on) in online {
            fs::create_dir_all(cpu.join(format!("cpu{id}"))).unwrap();
            fs::write(
                cpu.join(format!("cpu{id}/online")),
                if on { "1\n" } else { "0\n" },
            )
            .unwrap();
        }
        dir
    }

    #[test]
    fn onlines_the_lowest_offline_cpus_it_lacks() {
        let dir = tree("0-3", &[(1, false), (2, false), (3, false)]);
        let cpu = dir.path().join("devices/system/cpu");
        // A plain file does not follow the cpuN/online writes as the kernel's list does:
        // the call onlines what is missing, then waits for the list to say so.
        fs::write(cpu.join("online"), "0\n").unwrap();
        let err = online_cpus(
            dir.path(),
            3,
            false,
            Instant::now() + Duration::from_millis(50),
        );
        assert!(matches!(err, Err(HotplugError::CpusTimeout { .. })));
        assert_eq!(fs::read_to_string(cpu.join("cpu1/online")).unwrap(), "1");
        assert_eq!(fs::read_to_string(cpu.join("cpu2/online")).unwrap(), "1");
        assert_eq!(fs::read_to_string(cpu.join("cpu3/online")).unwrap(), "0\n");

        fs::write(cpu.join("online"), "0-2\n").unwrap();
        let online = online_cpus(
            dir.path(),
            3,
            false,
            Instant::now() + Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(online, "0-2");
    }

    #[test]
    fn never_onlines_while_the_vmm_ejects() {
        let dir = tree("0-2", &[(1, true), (2, false)]);
        let cpu = dir.path().join("devices/system/cpu");
        fs::write(cpu.join("online"), "0-1\n").unwrap();
        let err = online_cpus(
            dir.path(),
            1,
            false,
            Instant::now() + Duration::from_millis(50),
        );
        assert!(matches!(err, Err(HotplugError::CpusTimeout { .. })));
        assert_eq!(fs::read_to_string(cpu.join("cpu2/online")).unwrap(), "0\n");
        assert_eq!(fs::read_to_string(cpu.join("cpu1/online")).unwrap(), "1\n");
    }

    #[test]
    fn offlines_the_highest_surplus_cpus_when_asked_but_never_cpu0() {
        let dir = tree("0-3", &[(1, true), (2, true), (3, true)]);
        let cpu = dir.path().join("devices/system/cpu");
        fs::write(cpu.join("online"), "0-3\n").unwrap();
        let err = online_cpus(
            dir.path(),
            2,
            true,
            Instant::now() + Duration::from_millis(50),
        );
        assert!(matches!(err, Err(HotplugError::CpusTimeout { .. })));
        assert_eq!(fs::read_to_string(cpu.join("cpu3/online")).unwrap(), "0");
        assert_eq!(fs::read_to_string(cpu.join("cpu2/online")).unwrap(), "0");
        assert_eq!(fs::read_to_string(cpu.join("cpu1/online")).unwrap(), "1\n");
    }

    #[test]
    fn a_cpu_without_an_online_file_is_looked_at_again() {
        // cpu1 is present but its directory is not registered yet.
        let dir = tree("0-1", &[]);
        fs::write(dir.path().join("devices/system/cpu/online"), "0\n").unwrap();
        let err = online_cpus(
            dir.path(),
            2,
            false,
            Instant::now() + Duration::from_millis(50),
        );
        assert!(
            matches!(err, Err(HotplugError::CpusTimeout { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn gives_up_at_the_deadline_naming_what_it_saw() {
        let dir = tree("0", &[]);
        fs::write(dir.path().join("devices/system/cpu/online"), "0\n").unwrap();
        let err = online_cpus(
            dir.path(),
            2,
            false,
            Instant::now() + Duration::from_millis(50),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("2 CPUs are not online"), "{err}");
        assert!(err.contains("present \"0\""), "{err}");
    }

    #[test]
    fn refuses_absurd_counts_and_garbage_lists() {
        let dir = tree("0", &[]);
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(matches!(
            online_cpus(dir.path(), 0, false, soon),
            Err(HotplugError::BadCount(0))
        ));
        fs::write(dir.path().join("devices/system/cpu/online"), "0\n").unwrap();
        fs::write(dir.path().join("devices/system/cpu/present"), "0-x\n").unwrap();
        assert!(matches!(
            online_cpus(dir.path(), 2, false, soon),
            Err(HotplugError::Parse { .. })
        ));
        fs::write(dir.path().join("devices/system/cpu/online"), "zero\n").unwrap();
        assert!(matches!(
            online_cpus(dir.path(), 1, false, soon),
            Err(HotplugError::Parse { .. })
        ));
    }
}
