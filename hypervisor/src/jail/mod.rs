//! Confinement of the host processes ward starts (issue 14): what each helper may keep of
//! ward's privileges when it is executed. Each helper's own confinement lives with it:
//! ward-vmm's seccomp filters in hypervisor/vmm/src/seccomp, QEMU's `-sandbox` in
//! qemu/cmdline.rs, virtiofsd's namespace sandbox and capability list in
//! builtin/virtiofsd.rs.
//!
//! The sandbox's host cgroup is joined in [`cgroup`], before the privileges are given up.
//!
//! [`restrict`] runs between fork and exec (detach/child.rs), so it only makes raw system
//! calls: no allocation, no locks.

pub mod cgroup;

use libc::c_int;

pub use cgroup::CgroupJoin;

/// The privileges a helper runs with (issue 14: no host process keeps more than it needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privileges {
    /// ward's own (root with every capability): for programs that drop their own (virtiofsd
    /// keeps only those it names after building its namespace sandbox) or need them (QEMU's
    /// 9p passthrough creates files as the guest's users).
    Inherit,
    /// ward's own, but with no_new_privs: nothing it executes gains privileges.
    NoNewPrivs,
    /// No capabilities at all (effective, permitted, inheritable, ambient, and an empty
    /// bounding set, so that exec as uid 0 cannot give them back) and no_new_privs.
    None,
    /// Only the capabilities in the mask (bit n is capability n), in every set but the
    /// inheritable and ambient ones, and no_new_privs: for a program that must act as root
    /// on files (QEMU's 9p passthrough) but has no business making device nodes or file
    /// capabilities.
    Only(u64),
}

/// Capability numbers (linux/capability.h) of the helpers' keep-lists.
pub mod cap {
    pub const CHOWN: u64 = 1 << 0;
    pub const DAC_OVERRIDE: u64 = 1 << 1;
    pub const DAC_READ_SEARCH: u64 = 1 << 2;
    pub const FOWNER: u64 = 1 << 3;
    pub const FSETID: u64 = 1 << 4;
    pub const MKNOD: u64 = 1 << 27;
    pub const SETFCAP: u64 = 1 << 31;
}

/// The highest capability number tried when emptying the bounding set; numbers the kernel
/// does not know fail with EINVAL, which is ignored.
const LAST_CAP_TRIED: libc::c_ulong = 63;

/// Gives up privileges as `privileges` says.
///
/// # Safety
/// Only in a forked child (it changes the process's credentials for good).
pub unsafe fn restrict(privileges: Privileges) -> bool {
    if privileges == Privileges::Inherit {
        return true;
    }
    let keep = match privileges {
        Privileges::None => 0,
        Privileges::Only(mask) => mask,
        Privileges::Inherit | Privileges::NoNewPrivs => u64::MAX,
    };
    if keep != u64::MAX {
        // The bounding set first: dropping from it needs CAP_SETPCAP, lost below.
        for cap in 0..=LAST_CAP_TRIED {
            if keep & (1 << cap) != 0 {
                continue;
            }
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0
                && *libc::__errno_location() != libc::EINVAL
            {
                return false;
            }
        }
        // Ambient capabilities (Linux 4.3+); EINVAL on older kernels means there are none.
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ) < 0
            && *libc::__errno_location() != libc::EINVAL
        {
            return false;
        }
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        // Permitted and effective: what is kept (of what we have, as capset refuses more);
        // a root exec then gets exactly the bounding set back.
        let mut data = [CapData::default(); 2];
        if libc::syscall(
            libc::SYS_capget,
            &header as *const CapHeader,
            data.as_mut_ptr(),
        ) < 0
        {
            return false;
        }
        for (word, data) in data.iter_mut().enumerate() {
            let kept = (keep >> (32 * word)) as u32;
            data.permitted &= kept;
            data.effective &= kept;
            data.inheritable = 0;
        }
        if libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) < 0 {
            return false;
        }
    }
    libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets as two 32-bit words.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Executes `grep` on /proc/self/status after `restrict` in a forked child, as root
    /// here: exec as uid 0 would give every capability back unless the bounding set is
    /// empty too.
    fn status_after(privileges: Privileges) -> String {
        let grep = std::ffi::CString::new("/bin/grep").unwrap();
        let pattern = std::ffi::CString::new("^Cap\\|^NoNewPrivs").unwrap();
        let file = std::ffi::CString::new("/proc/self/status").unwrap();
        let argv = [
            grep.as_ptr(),
            pattern.as_ptr(),
            file.as_ptr(),
            std::ptr::null(),
        ];
        let envp = [std::ptr::null::<libc::c_char>()];
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the child makes only raw system calls on memory prepared before the
        // fork, and ends in execve or _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                libc::dup2(fds[1], 1);
                if !restrict(privileges) {
                    libc::_exit(2);
                }
                libc::execve(grep.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(3);
            }
        }
        // SAFETY: our copy of the write end; the read below then ends at the child's exit.
        unsafe { libc::close(fds[1]) };
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        let mut status = 0;
        // SAFETY: our child and our descriptor.
        unsafe {
            libc::waitpid(pid, &mut status, 0);
            libc::close(fds[0]);
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn no_privileges_means_no_capabilities_after_exec_and_no_new_privs() {
        let status = status_after(Privileges::None);
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert!(
                status.contains(&format!("{set}:\t0000000000000000")),
                "{set} not empty: {status}"
            );
        }
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    }

    #[test]
    fn only_keeps_the_listed_capabilities_after_exec_as_root() {
        let keep = cap::CHOWN | cap::FOWNER | cap::FSETID;
        let status = status_after(Privileges::Only(keep));
        for set in ["CapPrm", "CapEff", "CapBnd"] {
            assert!(
                status.contains(&format!("{set}:\t{keep:016x}")),
                "{set} is not {keep:#x}: {status}"
            );
        }
        for set in ["CapInh", "CapAmb"] {
            assert!(
                status.contains(&format!("{set}:\t0000000000000000")),
                "{set} not empty: {status}"
            );
        }
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    }

    #[test]
    fn no_new_privs_keeps_the_capabilities() {
        let status = status_after(Privileges::NoNewPrivs);
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        let ours = std::fs::read_to_string("/proc/self/status").unwrap();
        let eff = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .map(str::to_string)
        };
        assert_eq!(eff(&status), eff(&ours));
    }
}
