//! PID 1's duties, done once at boot: leave the initramfs root (so pivot_root works for
//! containers), mount the pseudo-filesystems, turn on every cgroup controller, set the
//! hostname, bring up `lo`; and the way out when the agent cannot go on.
//!
//! The way out: PID 1 must never exit (the kernel panics). When the agent cannot serve
//! (no vsock, a panic) it logs why and powers the guest off: the VM process exits, and the
//! runtime reports "the VM exited while booting" with the console's last lines — at once,
//! instead of after its boot timeout, and without a kernel panic trace burying the reason.

use std::fs;
use std::path::Path;

use nix::mount::MsFlags;
use slog::{crit, info, warn, Logger};

use crate::container::cgroup;
use crate::options::Options;

/// Where the initramfs root is re-mounted from, for the moment of the move.
const REBIND_DIR: &str = "/.ward-root";

/// Mounts and setup that must happen before logging can start (the console lives in
/// /dev). Returns what went wrong, to be logged once the logger exists.
pub fn early() -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = leave_initramfs() {
        problems.push(format!(
            "leaving the initramfs root failed, containers cannot pivot_root: {e}"
        ));
    }
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mounts: [(&str, &str, &str, MsFlags, &str); 8] = [
        (
            "proc",
            "/proc",
            "proc",
            nosuid_nodev | MsFlags::MS_NOEXEC,
            "",
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            nosuid_nodev | MsFlags::MS_NOEXEC,
            "",
        ),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            "mode=0755",
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "gid=5,mode=0620,ptmxmode=0666",
        ),
        ("shm", "/dev/shm", "tmpfs", nosuid_nodev, "mode=1777"),
        ("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755"),
        ("tmpfs", "/tmp", "tmpfs", nosuid_nodev, "mode=1777"),
        (
            "cgroup2",
            cgroup::CGROUP_ROOT,
            "cgroup2",
            nosuid_nodev | MsFlags::MS_NOEXEC,
            "",
        ),
    ];
    for (source, target, fstype, flags, data) in mounts {
        if let Err(e) = fs::create_dir_all(target) {
            problems.push(format!("creating {target}: {e}"));
            continue;
        }
        let data = (!data.is_empty()).then_some(data);
        match nix::mount::mount(Some(source), target, Some(fstype), flags, data) {
            // EBUSY: the kernel (CONFIG_DEVTMPFS_MOUNT) or an earlier agent did it.
            Ok(()) | Err(nix::Error::EBUSY) => {}
            Err(e) => problems.push(format!("mounting {fstype} on {target}: {}", e.desc())),
        }
    }
    problems
}

/// The initramfs is the kernel's `rootfs` mount, which has no parent: pivot_root(2)
/// refuses to move it away (EINVAL), in every mount namespace copied from it. Bind-mounting
/// it and moving the bind over `/` (what switch_root does with a real root) gives a root
/// that is an ordinary mount, so containers can pivot_root as usual.
fn leave_initramfs() -> Result<(), String> {
    let err = |what: &str, e: nix::Error| format!("{what}: {}", e.desc());
    match fs::create_dir(REBIND_DIR) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {REBIND_DIR}: {e}")),
    }
    nix::mount::mount(
        Some("/"),
        REBIND_DIR,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| err("bind-mounting /", e))?;
    nix::unistd::chdir(REBIND_DIR).map_err(|e| err("chdir", e))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| err("moving the root bind mount over /", e))?;
    nix::unistd::chroot(".").map_err(|e| err("chroot", e))?;
    nix::unistd::chdir("/").map_err(|e| err("chdir /", e))?;
    // The (now empty) directory the bind was made on.
    let _ = fs::remove_dir(REBIND_DIR);
    Ok(())
}

/// Setup that can log: cgroup controllers, hostname, loopback.
pub fn late(options: &Options, log: &Logger) {
    let root = Path::new(cgroup::CGROUP_ROOT);
    for (controller, e) in cgroup::enable_controllers(root) {
        warn!(log, "cgroup controller not enabled"; "controller" => controller, "error" => e.to_string());
    }
    let enabled = fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    info!(log, "cgroup controllers"; "enabled" => enabled.trim());
    if let Err(e) = nix::unistd::sethostname(&options.hostname) {
        warn!(log, "setting the hostname"; "hostname" => &options.hostname, "error" => e.desc());
    }
    if let Err(e) = crate::netdev::loopback_up() {
        warn!(log, "bringing up lo"; "error" => e.to_string());
    }
}

/// The agent cannot go on: log, then power off (PID 1) or exit (anything else).
pub fn fatal(log: &Logger, what: &str, error: &str) -> ! {
    crit!(log, "fatal error, stopping the guest"; "what" => what, "error" => error);
    power_off()
}

/// Powers the guest off if we are PID 1, exits otherwise. Never returns.
pub fn power_off() -> ! {
    if std::process::id() == 1 {
        nix::unistd::sync();
        // SAFETY: reboot with a command constant has no memory arguments.
        unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_POWER_OFF) };
        // Still here (no power-off support): idle rather than exit and panic the kernel.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    std::process::exit(1)
}
