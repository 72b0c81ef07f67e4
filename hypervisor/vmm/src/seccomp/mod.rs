//! Seccomp filters, one per thread class: the main (VMM) thread, the vCPU threads, the API
//! threads and the device worker threads. A guest that takes over a thread of ward-vmm
//! through a device-model bug can then make only the system calls that thread class
//! makes in normal work; any other call traps, and the SIGSYS handler writes one line
//! naming the thread class and the call to stderr (ward-vmm's log) and ends the process.
//!
//! A filter is inherited by the threads its thread creates, and stacked filters all have
//! to allow a call. ward-vmm creates threads like this:
//! - the main thread starts the API thread before it installs its own filter, so the API
//!   thread (and the connection threads it starts) only carry the API filter;
//! - the main thread then starts the vCPU threads, at boot and on CPU hotplug;
//! - a device worker is started by whichever thread activates the device: a vCPU thread
//!   (the guest's driver writes DRIVER_OK from a vCPU), or the main thread in tests.
//!
//! So each class's allow-list is its own needs plus those of the threads it creates: the
//! vCPU list includes the workers' ([`vcpu::rules`] merges [`worker::rules`]), the VMM list
//! includes the vCPUs' (and therefore the workers'). The worker filter, installed last in a
//! worker, is what narrows a worker down to its own calls.
//!
//! Filters are compiled once, when [`enable`] is called (in `main`, before the VM is
//! built), so a thread only has to apply its precompiled program.

mod api;
mod kvm;
mod vcpu;
mod vmm;
mod worker;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the seccomp filter of the {class} threads: {source}")]
    Build {
        class: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("installing the seccomp filter of the {class} thread: {source}")]
    Install {
        class: &'static str,
        #[source]
        source: seccompiler::Error,
    },
    #[error("installing the SIGSYS handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("seccomp filters were enabled twice")]
    AlreadyEnabled,
    #[error("the thread ended before it installed its seccomp filter")]
    ThreadGone,
}

/// The kinds of threads ward-vmm runs, each with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadClass {
    /// The main thread: builds the VM, runs the event loop, serves API calls, hotplug.
    Vmm,
    /// A vCPU thread: `KVM_RUN` and the device emulation its exits lead to.
    Vcpu,
    /// The API socket's accept thread and its connection threads.
    Api,
    /// A device worker: virtio queues and their backends (files, sockets, vhost-user).
    Worker,
}

impl ThreadClass {
    pub const ALL: [ThreadClass; 4] = [
        ThreadClass::Vmm,
        ThreadClass::Vcpu,
        ThreadClass::Api,
        ThreadClass::Worker,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ThreadClass::Vmm => "vmm",
            ThreadClass::Vcpu => "vcpu",
            ThreadClass::Api => "api",
            ThreadClass::Worker => "device worker",
        }
    }

    /// The allow-list of this class, including what the threads it creates need.
    pub fn rules(self) -> Result<Rules, Error> {
        let class = self.name();
        let build = |source| Error::Build { class, source };
        match self {
            ThreadClass::Vmm => vmm::rules(),
            ThreadClass::Vcpu => vcpu::rules(),
            ThreadClass::Api => api::rules(),
            ThreadClass::Worker => worker::rules(),
        }
        .map_err(build)
    }

    /// This class's filter as a BPF program.
    pub fn program(self) -> Result<BpfProgram, Error> {
        let class = self.name();
        let build = |source| Error::Build { class, source };
        let filter = SeccompFilter::new(
            self.rules()?.into_map(),
            // A call off the list traps: the SIGSYS handler names it, then ends ward-vmm.
            SeccompAction::Trap,
            SeccompAction::Allow,
            target_arch(),
        )
        .map_err(build)?;
        filter.try_into().map_err(build)
    }
}

#[cfg(target_arch = "x86_64")]
fn target_arch() -> TargetArch {
    TargetArch::x86_64
}

#[cfg(target_arch = "aarch64")]
fn target_arch() -> TargetArch {
    TargetArch::aarch64
}

/// An allow-list: for each system call, the argument patterns allowed (none: any).
#[derive(Debug, Default, Clone)]
pub struct Rules(BTreeMap<i64, Vec<SeccompRule>>);

impl Rules {
    /// Allows `nr` with any arguments.
    pub fn allow(&mut self, nr: libc::c_long) -> &mut Self {
        self.0.insert(nr, Vec::new());
        self
    }

    pub fn allow_all(&mut self, nrs: &[libc::c_long]) -> &mut Self {
        for &nr in nrs {
            self.allow(nr);
        }
        self
    }

    /// Allows `nr` when argument `arg` equals one of `values` (compared as 32 bits: ioctl
    /// request numbers, socket families, fcntl commands all fit).
    pub fn allow_arg_in(
        &mut self,
        nr: libc::c_long,
        arg: u8,
        values: &[u64],
    ) -> Result<&mut Self, seccompiler::BackendError> {
        let mut rules = Vec::new();
        for &value in values {
            let cond =
                SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)?;
            rules.push(SeccompRule::new(vec![cond])?);
        }
        self.add_rules(nr, rules);
        Ok(self)
    }

    /// Allows `nr` when the bits of `mask` in argument `arg` are all set.
    pub fn allow_arg_has_bits(
        &mut self,
        nr: libc::c_long,
        arg: u8,
        mask: u64,
    ) -> Result<&mut Self, seccompiler::BackendError> {
        let cond = SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(mask),
            mask,
        )?;
        self.add_rules(nr, vec![SeccompRule::new(vec![cond])?]);
        Ok(self)
    }

    /// Allows `nr` when all of `conditions` hold: argument `arg`, compared as `len`
    /// (32 or 64 bits), equals `value`.
    pub fn allow_args_eq(
        &mut self,
        nr: libc::c_long,
        conditions: &[(u8, SeccompCmpArgLen, u64)],
    ) -> Result<&mut Self, seccompiler::BackendError> {
        let conditions = conditions
            .iter()
            .map(|(arg, len, value)| {
                SeccompCondition::new(*arg, len.clone(), SeccompCmpOp::Eq, *value)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.add_rules(nr, vec![SeccompRule::new(conditions)?]);
        Ok(self)
    }

    fn add_rules(&mut self, nr: i64, rules: Vec<SeccompRule>) {
        match self.0.get_mut(&nr) {
            // Already allowed with any arguments: stays so.
            Some(existing) if existing.is_empty() => {}
            Some(existing) => existing.extend(rules),
            None => {
                self.0.insert(nr, rules);
            }
        }
    }

    /// Adds everything `other` allows.
    pub fn merge(&mut self, other: Rules) -> &mut Self {
        for (nr, rules) in other.0 {
            if rules.is_empty() {
                self.0.insert(nr, Vec::new());
            } else {
                self.add_rules(nr, rules);
            }
        }
        self
    }

    /// Whether `nr` is allowed in some form.
    pub fn mentions(&self, nr: libc::c_long) -> bool {
        self.0.contains_key(&nr)
    }

    /// Whether `nr` is allowed with any arguments.
    pub fn allows_any_args(&self, nr: libc::c_long) -> bool {
        self.0.get(&nr).is_some_and(Vec::is_empty)
    }

    fn into_map(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        self.0
    }
}

/// What every thread does: Rust's runtime and allocator, glibc's thread exit, logging to
/// stderr, locks, the SIGSYS and kick handlers' return, and ending the process.
fn common() -> Rules {
    let mut r = Rules::default();
    r.allow_all(&[
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_close,
        libc::SYS_futex,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_mprotect,
        libc::SYS_brk,
        libc::SYS_sigaltstack,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_getrandom,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ]);
    // abort() (a panic with panic=abort) signals its own thread.
    r.allow(libc::SYS_tgkill);
    r
}

/// glibc's pthread_create: clone3 first, clone on ENOSYS. clone3's flags sit in a struct
/// seccomp cannot read, so it is refused with ENOSYS by [`NO_CLONE3`] and the `clone`
/// fallback is allowed only with CLONE_THREAD: new threads, never new processes.
fn thread_creation(r: &mut Rules) -> Result<(), seccompiler::BackendError> {
    r.allow(libc::SYS_clone3);
    r.allow_arg_has_bits(libc::SYS_clone, 0, libc::CLONE_THREAD as u64)?;
    // The new thread sets up glibc's per-thread state and names itself.
    r.allow_all(&[libc::SYS_set_robust_list, libc::SYS_rseq]);
    // ... and installs its own filter, under this one: no_new_privs, then a filter (which
    // can only narrow what is allowed).
    r.allow_arg_in(
        libc::SYS_prctl,
        0,
        &[libc::PR_SET_NAME as u64, libc::PR_SET_NO_NEW_PRIVS as u64],
    )?;
    r.allow_arg_in(
        libc::SYS_seccomp,
        0,
        &[u64::from(libc::SECCOMP_SET_MODE_FILTER)],
    )?;
    Ok(())
}

/// The second filter of every thread: clone3 fails with ENOSYS (see [`thread_creation`]),
/// everything else passes on to the class filter.
fn no_clone3_program() -> Result<BpfProgram, seccompiler::BackendError> {
    let mut rules = BTreeMap::new();
    rules.insert(libc::SYS_clone3, Vec::new());
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        target_arch(),
    )?
    .try_into()
}

struct Programs {
    no_clone3: BpfProgram,
    by_class: Vec<(ThreadClass, BpfProgram)>,
}

static PROGRAMS: OnceLock<Programs> = OnceLock::new();

thread_local! {
    /// The class of this thread's filter, for the SIGSYS handler's message. `const`: read
    /// from a signal handler, it must not allocate or run an initialiser.
    static CLASS: Cell<&'static str> = const { Cell::new("unfiltered") };
}

/// Turns filtering on for this process: compiles every class's filter and installs the
/// SIGSYS handler. Until this is called (the library's tests, the fuzz targets),
/// [`enter`] installs nothing.
pub fn enable() -> Result<(), Error> {
    let no_clone3 = no_clone3_program().map_err(|source| Error::Build {
        class: "every",
        source,
    })?;
    let mut by_class = Vec::new();
    for class in ThreadClass::ALL {
        by_class.push((class, class.program()?));
    }
    install_sigsys_handler()?;
    PROGRAMS
        .set(Programs {
            no_clone3,
            by_class,
        })
        .map_err(|_| Error::AlreadyEnabled)
}

/// Whether [`enable`] was called.
pub fn enabled() -> bool {
    PROGRAMS.get().is_some()
}

/// Confines the calling thread to `class`'s calls, for good (filters cannot be removed).
/// Sets no_new_privs first, as seccomp requires of a process without CAP_SYS_ADMIN.
/// Does nothing unless [`enable`] was called.
pub fn enter(class: ThreadClass) -> Result<(), Error> {
    let Some(programs) = PROGRAMS.get() else {
        return Ok(());
    };
    let install = |program: &BpfProgram| {
        seccompiler::apply_filter(program).map_err(|source| Error::Install {
            class: class.name(),
            source,
        })
    };
    if let Some((_, program)) = programs.by_class.iter().find(|(c, _)| *c == class) {
        // Named first: a trap while installing comes from the filter this thread inherited.
        CLASS.with(|c| c.set(class.name()));
        install(&programs.no_clone3)?;
        install(program)?;
    }
    Ok(())
}

/// Exit status after a forbidden call: what a shell shows for death by SIGSYS.
const SIGSYS_EXIT: i32 = 128 + libc::SIGSYS;

fn install_sigsys_handler() -> Result<(), Error> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler has
    // the three-argument signature SA_SIGINFO asks for, and only does async-signal-safe
    // work (a write and _exit).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(Error::Signal(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Where the kernel puts the number of the trapped call in a SIGSYS siginfo_t
/// (`si_syscall`, after si_signo, si_errno, si_code, padding and `si_call_addr`).
#[cfg(target_pointer_width = "64")]
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let nr = if info.is_null() {
        -1
    } else {
        // SAFETY: the kernel passes a valid siginfo_t for a SA_SIGINFO handler; for
        // SIGSYS with SYS_SECCOMP its union holds si_call_addr then the int si_syscall.
        unsafe { std::ptr::read_unaligned(info.cast::<u8>().add(SI_SYSCALL_OFFSET).cast::<i32>()) }
    };
    let class = CLASS.with(|c| c.get());
    let mut line = Line::default();
    line.push(b"ward-vmm: seccomp: the ");
    line.push(class.as_bytes());
    line.push(b" thread made system call ");
    line.push_int(i64::from(nr));
    line.push(b", which its filter forbids; stopping the VM\n");
    // SAFETY: write and _exit are async-signal-safe; the buffer lives on this stack.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::_exit(SIGSYS_EXIT);
    }
}

/// A message built without allocating (the SIGSYS handler may interrupt the allocator).
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 160],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    fn push_int(&mut self, v: i64) {
        let mut digits = [0u8; 20];
        let mut n = v.unsigned_abs();
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        if v < 0 {
            self.push(b"-");
        }
        self.push(&digits[i..]);
    }
}

#[cfg(test)]
mod tests;
