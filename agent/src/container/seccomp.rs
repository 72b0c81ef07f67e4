//! `linux.seccomp`: the container's OCI seccomp profile, with runc's semantics.
//!
//! Three steps, each where it belongs:
//! - [`translate`] (pure, what the fuzz target calls): the profile checked and turned into
//!   a [`Profile`]: actions with their errno, architectures, filter flags, and one rule per
//!   syscall name with its argument conditions. As runc does: a name libseccomp does not
//!   know is skipped (a newer profile on an older kernel), a rule whose action is the
//!   default action is dropped, `errnoRet` defaults to EPERM, `SCMP_CMP_MASKED_EQ` takes
//!   `value` as the mask and `valueTwo` as the datum (the other operators ignore
//!   `valueTwo`), and conditions that name one argument twice become one rule each (ORed)
//!   instead of one rule (ANDed). `SCMP_ACT_NOTIFY` is refused: there is no seccomp agent
//!   to hand the listener to.
//! - [`compile`] (in the agent, before any fork): libseccomp builds the filter and exports
//!   it as a BPF program, so that every error is a CreateContainer error naming it; runc's
//!   ENOSYS stub goes in front of it ([`enosys_stub`]).
//! - [`load`] (in the container process, right before execve or before its privileges go,
//!   see `spawn::exec_program`): one seccomp(2) call with the profile's flags, as runc's
//!   loader does, and no allocation.

use std::io::{Read, Seek, SeekFrom};

use libseccomp::ScmpSyscall;
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use thiserror::Error;

/// A system call has at most six arguments.
const MAX_ARGS: usize = 6;
/// Rules (one per syscall name and argument split) accepted in one profile: far above the
/// ~450 of podman's and docker's default profiles, and a bound on libseccomp's work.
const MAX_RULES: usize = 8192;
/// Above this many rules libseccomp is asked for a binary tree of syscalls (runc's choice
/// too: libseccomp 2.5.4 misbehaves with the tree and no rule at all).
const TREE_ABOVE: usize = 32;
/// The kernel's limit on a filter's length.
const BPF_MAXINSNS: usize = libc::BPF_MAXINSNS as usize;

#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("linux.seccomp does not parse: {0}")]
    Json(serde_json::Error),
    #[error(
        "linux.seccomp: {at} is SCMP_ACT_NOTIFY, which needs a seccomp agent listening on \
         a socket; ward does not support one"
    )]
    Notify { at: String },
    #[error("linux.seccomp: {at} errnoRet {value} is not an errno (0 to 65535)")]
    Errno { at: String, value: u32 },
    #[error("linux.seccomp: syscalls[{rule}] has an empty syscall name")]
    EmptyName { rule: usize },
    #[error("linux.seccomp: syscalls[{rule}] name {name:?} contains a NUL byte")]
    NulInName { rule: usize, name: String },
    #[error(
        "linux.seccomp: syscalls[{rule}].args[{arg}] index {index} is not an argument of a \
         system call (0 to 5)"
    )]
    ArgIndex {
        rule: usize,
        arg: usize,
        index: usize,
    },
    #[error("linux.seccomp has {0} rules (syscall names), at most {MAX_RULES} are accepted")]
    TooManyRules(usize),
    #[error("linux.seccomp: architecture {0} is not known to libseccomp")]
    Arch(String),
    #[error("linux.seccomp: libseccomp refused {what}: {source}")]
    Libseccomp {
        what: String,
        source: libseccomp::error::SeccompError,
    },
    #[error("linux.seccomp: exporting the filter: {0}")]
    Export(std::io::Error),
    #[error(
        "linux.seccomp compiles to {0} BPF instructions, more than the kernel's {BPF_MAXINSNS}"
    )]
    TooLong(usize),
}

/// One argument comparison, ANDed with the others of its rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    pub index: u32,
    pub op: ScmpCompareOp,
    pub datum: u64,
}

/// One libseccomp rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub syscall: ScmpSyscall,
    pub action: ScmpAction,
    pub conditions: Vec<Condition>,
}

/// The profile as libseccomp will be told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub default_action: ScmpAction,
    pub architectures: Vec<ScmpArch>,
    pub rules: Vec<Rule>,
    /// SECCOMP_FILTER_FLAG_* for seccomp(2).
    pub flags: libc::c_ulong,
    /// Names libseccomp does not know, skipped (for a debug line in the log).
    pub skipped: Vec<String>,
    /// The highest native (x86-64) syscall number the profile names, whatever its action:
    /// a syscall above it is newer than the profile (see [`enosys_stub`]).
    pub newest_known: Option<u32>,
}

/// `linux.seccomp` from JSON (the fuzz target's way in; CreateContainer gets it parsed
/// with the rest of config.json).
pub fn parse(json: &[u8]) -> Result<LinuxSeccomp, SeccompError> {
    serde_json::from_slice(json).map_err(SeccompError::Json)
}

/// runc's mapping of an OCI action; `at` names the field for errors.
fn action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    at: &dyn Fn() -> String,
) -> Result<ScmpAction, SeccompError> {
    let errno = || -> Result<u16, SeccompError> {
        match errno_ret {
            None => Ok(libc::EPERM as u16),
            Some(value) => {
                u16::try_from(value).map_err(|_| SeccompError::Errno { at: at(), value })
            }
        }
    };
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(i32::from(errno()?)),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno()?),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => return Err(SeccompError::Notify { at: at() }),
    })
}

fn arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
    }
}

fn operator(op: LinuxSeccompOperator, mask: u64) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(mask),
    }
}

/// The first few names of a rule, for a message.
fn some_names(names: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Checks the profile and turns it into libseccomp's terms (see the module comment).
pub fn translate(seccomp: &LinuxSeccomp) -> Result<Profile, SeccompError> {
    let default_action = action(
        seccomp.default_action(),
        seccomp.default_errno_ret(),
        &|| "defaultAction".into(),
    )?;
    let architectures = seccomp
        .architectures()
        .iter()
        .flatten()
        .map(|a| arch(*a))
        .collect();
    let mut flags: libc::c_ulong = 0;
    for flag in seccomp.flags().iter().flatten() {
        match flag {
            // The process is single-threaded when it loads the filter (runc ignores it too).
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {}
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => flags |= libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                flags |= libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
        }
    }

    let mut rules = Vec::new();
    let mut skipped = Vec::new();
    let mut newest_known = None;
    for (i, call) in seccomp.syscalls().iter().flatten().enumerate() {
        let call_action = action(call.action(), call.errno_ret(), &|| {
            format!("syscalls[{i}] ({})", some_names(call.names()))
        })?;
        let args = call.args().as_deref().unwrap_or(&[]);
        let mut per_index = [0usize; MAX_ARGS];
        let mut conditions = Vec::with_capacity(args.len());
        for (j, arg) in args.iter().enumerate() {
            let count = per_index
                .get_mut(arg.index())
                .ok_or(SeccompError::ArgIndex {
                    rule: i,
                    arg: j,
                    index: arg.index(),
                })?;
            *count += 1;
            let (op, datum) = match arg.op() {
                LinuxSeccompOperator::ScmpCmpMaskedEq => (
                    operator(arg.op(), arg.value()),
                    arg.value_two().unwrap_or(0),
                ),
                other => (operator(other, 0), arg.value()),
            };
            conditions.push(Condition {
                // Below MAX_ARGS, checked above.
                index: arg.index() as u32,
                op,
                datum,
            });
        }
        // An argument compared twice: each condition a rule of its own (ORed), as runc.
        let split = per_index.iter().any(|&n| n > 1);
        for name in call.names() {
            if name.is_empty() {
                return Err(SeccompError::EmptyName { rule: i });
            }
            if name.contains('\0') {
                return Err(SeccompError::NulInName {
                    rule: i,
                    name: name.clone(),
                });
            }
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                skipped.push(name.clone());
                continue;
            };
            // Pseudo-syscalls of other architectures are negative.
            if let Ok(number) = u32::try_from(i32::from(syscall)) {
                newest_known = newest_known.max(Some(number));
            }
            // Redundant with the default action: libseccomp would refuse it.
            if call_action == default_action {
                continue;
            }
            let groups: Vec<Vec<Condition>> = if split {
                conditions.iter().map(|c| vec![*c]).collect()
            } else {
                vec![conditions.clone()]
            };
            for conditions in groups {
                if rules.len() >= MAX_RULES {
                    return Err(SeccompError::TooManyRules(rules.len() + 1));
                }
                rules.push(Rule {
                    name: name.clone(),
                    syscall,
                    action: call_action,
                    conditions,
                });
            }
        }
    }
    Ok(Profile {
        default_action,
        architectures,
        rules,
        flags,
        skipped,
        newest_known,
    })
}

/// A compiled filter: the BPF program and the flags seccomp(2) loads it with.
#[derive(Clone)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len())
            .field("flags", &self.flags)
            .finish()
    }
}

impl Filter {
    pub fn instructions(&self) -> usize {
        self.program.len()
    }
}

/// Builds the filter with libseccomp and exports its BPF program (runc does the same, and
/// loads the exported program itself).
pub fn compile(profile: &Profile) -> Result<Filter, SeccompError> {
    let lib = |what: &str| {
        let what = what.to_string();
        move |source| SeccompError::Libseccomp { what, source }
    };
    let mut ctx =
        ScmpFilterContext::new(profile.default_action).map_err(lib("the default action"))?;
    // The program is loaded by `load`, which sets no_new_privs only where the spec asks.
    ctx.set_ctl_nnp(false)
        .map_err(lib("clearing its NNP bit"))?;
    for arch in &profile.architectures {
        ctx.add_arch(*arch)
            .map_err(lib(&format!("architecture {arch:?}")))?;
    }
    if profile.rules.len() > TREE_ABOVE {
        // An optimisation only: libseccomp older than 2.5 does not have it.
        let _ = ctx.set_ctl_optimize(2);
    }
    for rule in &profile.rules {
        let conditions: Vec<ScmpArgCompare> = rule
            .conditions
            .iter()
            .map(|c| ScmpArgCompare::new(c.index, c.op, c.datum))
            .collect();
        ctx.add_rule_conditional(rule.action, rule.syscall, &conditions)
            .map_err(lib(&format!("the rule for {}", rule.name)))?;
    }

    let mut file = std::fs::File::from(
        nix::sys::memfd::memfd_create(
            c"ward-seccomp",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .map_err(|e| SeccompError::Export(e.into()))?,
    );
    ctx.export_bpf(&file)
        .map_err(lib("exporting the program"))?;
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(SeccompError::Export)?;
    let mut program = enosys_stub(profile);
    program.extend(program_from_bytes(&bytes)?);
    if program.len() > BPF_MAXINSNS {
        return Err(SeccompError::TooLong(program.len()));
    }
    Ok(Filter {
        program,
        flags: profile.flags,
    })
}

/// x86-64's AUDIT_ARCH (EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE).
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Set in the numbers of x32 syscalls, which go to libseccomp's program untouched.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// runc's ENOSYS patch: a native syscall numbered above every one the profile names is
/// newer than the profile, and gets ENOSYS instead of the default action. A program
/// probing for a new call (glibc's clone3, then clone) then falls back as it does on an
/// older kernel, where EPERM would make it fail. Nothing is added where the default
/// action allows, or already answers ENOSYS.
fn enosys_stub(profile: &Profile) -> Vec<libc::sock_filter> {
    let enosys = ScmpAction::Errno(libc::ENOSYS);
    let Some(newest) = profile.newest_known else {
        return Vec::new();
    };
    if matches!(profile.default_action, ScmpAction::Allow) || profile.default_action == enosys {
        return Vec::new();
    }
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // seccomp_data: nr at offset 0, arch at 4. Jumps count from the next instruction;
    // libseccomp's program starts right after the six below.
    vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            0,
            4,
        ),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jump(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            X32_SYSCALL_BIT,
            2,
            0,
        ),
        jump(libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K, newest, 0, 1),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
    ]
}

/// The exported program, struct sock_filter after struct sock_filter in native order.
fn program_from_bytes(bytes: &[u8]) -> Result<Vec<libc::sock_filter>, SeccompError> {
    const SIZE: usize = std::mem::size_of::<libc::sock_filter>();
    if !bytes.len().is_multiple_of(SIZE) || bytes.is_empty() {
        return Err(SeccompError::Export(std::io::Error::other(format!(
            "libseccomp wrote {} bytes, not a whole number of BPF instructions",
            bytes.len()
        ))));
    }
    let program: Vec<libc::sock_filter> = bytes
        .chunks_exact(SIZE)
        .map(|i| libc::sock_filter {
            code: u16::from_ne_bytes([i[0], i[1]]),
            jt: i[2],
            jf: i[3],
            k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
        })
        .collect();
    if program.len() > BPF_MAXINSNS {
        return Err(SeccompError::TooLong(program.len()));
    }
    Ok(program)
}

/// Installs the filter on the calling thread. Runs in the forked container process: no
/// allocation unless it fails. Without no_new_privs it needs CAP_SYS_ADMIN.
pub fn load(filter: &Filter) -> Result<(), String> {
    let prog = libc::sock_fprog {
        // At most BPF_MAXINSNS, checked by `compile`.
        len: filter.program.len() as libc::c_ushort,
        filter: filter.program.as_ptr().cast_mut(),
    };
    // SAFETY: seccomp(SECCOMP_SET_MODE_FILTER) reads `prog` and the `len` instructions it
    // points to, both alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            filter.flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(format!(
            "loading the seccomp filter (linux.seccomp): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> Result<Profile, SeccompError> {
        translate(&parse(json.as_bytes())?)
    }

    fn rules_for<'a>(p: &'a Profile, name: &str) -> Vec<&'a Rule> {
        p.rules.iter().filter(|r| r.name == name).collect()
    }

    #[test]
    fn actions_and_errno_follow_runc() {
        let p = profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["kill"], "action": "SCMP_ACT_KILL"},
                {"names": ["tkill"], "action": "SCMP_ACT_KILL_THREAD"},
                {"names": ["tgkill"], "action": "SCMP_ACT_KILL_PROCESS"},
                {"names": ["ptrace"], "action": "SCMP_ACT_TRAP"},
                {"names": ["getpid"], "action": "SCMP_ACT_TRACE"},
                {"names": ["getppid"], "action": "SCMP_ACT_TRACE", "errnoRet": 5},
                {"names": ["uname"], "action": "SCMP_ACT_LOG"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(p.default_action, ScmpAction::Errno(libc::ENOSYS));
        let expected = [
            ("read", ScmpAction::Allow),
            ("mkdir", ScmpAction::Errno(libc::EPERM)),
            ("rmdir", ScmpAction::Errno(libc::EACCES)),
            ("kill", ScmpAction::KillThread),
            ("tkill", ScmpAction::KillThread),
            ("tgkill", ScmpAction::KillProcess),
            ("ptrace", ScmpAction::Trap),
            ("getpid", ScmpAction::Trace(libc::EPERM as u16)),
            ("getppid", ScmpAction::Trace(5)),
            ("uname", ScmpAction::Log),
        ];
        assert_eq!(p.rules.len(), expected.len());
        for (name, action) in expected {
            let rules = rules_for(&p, name);
            assert_eq!(rules.len(), 1, "{name}");
            assert_eq!(rules[0].action, action, "{name}");
            assert_eq!(rules[0].syscall, ScmpSyscall::from_name(name).unwrap());
            assert!(rules[0].conditions.is_empty());
        }
        // Without defaultErrnoRet, EPERM.
        let p = profile(r#"{"defaultAction": "SCMP_ACT_ERRNO"}"#).unwrap();
        assert_eq!(p.default_action, ScmpAction::Errno(libc::EPERM));
        assert!(p.rules.is_empty() && p.architectures.is_empty() && p.flags == 0);
    }

    #[test]
    fn rules_with_the_default_action_are_dropped() {
        let p = profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 2}
            ]}"#,
        )
        .unwrap();
        assert!(rules_for(&p, "mkdir").is_empty());
        assert_eq!(rules_for(&p, "rmdir").len(), 1);
    }

    #[test]
    fn argument_operators_map_to_libseccomp() {
        let p = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{
                "names": ["mmap"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 0, "value": 1, "valueTwo": 99, "op": "SCMP_CMP_NE"},
                    {"index": 1, "value": 2, "op": "SCMP_CMP_LT"},
                    {"index": 2, "value": 3, "op": "SCMP_CMP_LE"},
                    {"index": 3, "value": 4, "op": "SCMP_CMP_EQ"},
                    {"index": 4, "value": 5, "op": "SCMP_CMP_GE"},
                    {"index": 5, "value": 6, "op": "SCMP_CMP_GT"}
                ]}, {
                "names": ["clone"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 0, "value": 2114060288, "valueTwo": 7, "op": "SCMP_CMP_MASKED_EQ"}
                ]}
            ]}"#,
        )
        .unwrap();
        let mmap = rules_for(&p, "mmap");
        assert_eq!(mmap.len(), 1, "different arguments: one rule, ANDed");
        let ops: Vec<(u32, ScmpCompareOp, u64)> = mmap[0]
            .conditions
            .iter()
            .map(|c| (c.index, c.op, c.datum))
            .collect();
        assert_eq!(
            ops,
            vec![
                (0, ScmpCompareOp::NotEqual, 1),
                (1, ScmpCompareOp::Less, 2),
                (2, ScmpCompareOp::LessOrEqual, 3),
                (3, ScmpCompareOp::Equal, 4),
                (4, ScmpCompareOp::GreaterEqual, 5),
                (5, ScmpCompareOp::Greater, 6),
            ]
        );
        // value is the mask, valueTwo the datum.
        let clone = rules_for(&p, "clone");
        assert_eq!(
            clone[0].conditions,
            vec![Condition {
                index: 0,
                op: ScmpCompareOp::MaskedEqual(2114060288),
                datum: 7
            }]
        );
        compile(&p).unwrap();
    }

    #[test]
    fn one_argument_compared_twice_splits_the_rule() {
        let p = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{
                "names": ["personality", "socket"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                    {"index": 0, "value": 9, "op": "SCMP_CMP_EQ"},
                    {"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}
                ]}
            ]}"#,
        )
        .unwrap();
        for name in ["personality", "socket"] {
            let rules = rules_for(&p, name);
            assert_eq!(rules.len(), 3, "{name}: one rule per condition, ORed");
            assert!(rules.iter().all(|r| r.conditions.len() == 1));
        }
        compile(&p).unwrap();
    }

    #[test]
    fn unknown_syscalls_are_skipped_and_names_checked() {
        let p = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["no_such_syscall", "mkdirat", "mkdir"], "action": "SCMP_ACT_ERRNO"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(p.skipped, vec!["no_such_syscall".to_string()]);
        let names: Vec<&str> = p.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["mkdirat", "mkdir"]);

        let empty = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ERRNO"},
                {"names": [""], "action": "SCMP_ACT_ERRNO"}
            ]}"#,
        )
        .unwrap_err();
        assert_eq!(
            empty.to_string(),
            "linux.seccomp: syscalls[1] has an empty syscall name"
        );
        let nul = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["re\u0000ad"], "action": "SCMP_ACT_ERRNO"}
            ]}"#,
        )
        .unwrap_err();
        assert!(matches!(nul, SeccompError::NulInName { rule: 0, .. }));
    }

    #[test]
    fn bad_actions_and_values_are_named() {
        let bad = profile(r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#).unwrap_err();
        let message = bad.to_string();
        assert!(
            message.starts_with("linux.seccomp does not parse: unknown variant `SCMP_ACT_MAYBE`"),
            "{message}"
        );
        let notify = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["openat", "open"], "action": "SCMP_ACT_NOTIFY"}
            ]}"#,
        )
        .unwrap_err();
        assert_eq!(
            notify.to_string(),
            "linux.seccomp: syscalls[1] (openat, open) is SCMP_ACT_NOTIFY, which needs a \
             seccomp agent listening on a socket; ward does not support one"
        );
        let many = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["a", "b", "c", "d", "e", "f"], "action": "SCMP_ACT_NOTIFY"}
            ]}"#,
        )
        .unwrap_err();
        assert!(
            many.to_string()
                .starts_with("linux.seccomp: syscalls[0] (a, b, c, d and 2 more) is"),
            "{many}"
        );
        let notify = profile(r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).unwrap_err();
        assert!(matches!(notify, SeccompError::Notify { ref at } if at == "defaultAction"));
        let errno = profile(r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 65536}"#)
            .unwrap_err();
        assert_eq!(
            errno.to_string(),
            "linux.seccomp: defaultAction errnoRet 65536 is not an errno (0 to 65535)"
        );
        let index = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            index.to_string(),
            "linux.seccomp: syscalls[0].args[0] index 6 is not an argument of a system call \
             (0 to 5)"
        );
        let op = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_ABOUT"}]}]}"#,
        )
        .unwrap_err();
        assert!(op.to_string().contains("SCMP_CMP_ABOUT"), "{op}");
    }

    #[test]
    fn architectures_and_flags() {
        let p = profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                          "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls": [{"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]}"#,
        )
        .unwrap();
        assert_eq!(
            p.architectures,
            vec![ScmpArch::X8664, ScmpArch::X86, ScmpArch::X32]
        );
        assert_eq!(
            p.flags,
            libc::SECCOMP_FILTER_FLAG_LOG | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
        );
        let filter = compile(&p).unwrap();
        assert!(filter.instructions() > 3 && filter.instructions() < 200);
        assert_eq!(filter.flags, p.flags);
        let unknown = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_SOMETHING"]}"#,
        )
        .unwrap_err();
        assert!(unknown
            .to_string()
            .contains("SECCOMP_FILTER_FLAG_SOMETHING"));
    }

    #[test]
    fn a_large_profile_compiles_within_the_kernels_limit() {
        // Every name libseccomp knows on this architecture, allowed, as a default-deny
        // profile like podman's lists them.
        let names: Vec<String> = (0..1024)
            .filter_map(|n| ScmpSyscall::from(n).get_name().ok())
            .collect();
        assert!(names.len() > 300);
        let json = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]
        });
        let p = profile(&json.to_string()).unwrap();
        let filter = compile(&p).unwrap();
        assert!(filter.instructions() <= BPF_MAXINSNS);
    }

    #[test]
    fn truncated_programs_are_refused() {
        assert!(program_from_bytes(&[0; 12]).is_err());
        assert!(program_from_bytes(&[]).is_err());
        assert_eq!(program_from_bytes(&[0; 16]).unwrap().len(), 2);
        assert!(matches!(
            program_from_bytes(&vec![0; 8 * (BPF_MAXINSNS + 1)]),
            Err(SeccompError::TooLong(_))
        ));
    }

    /// Loads `filter` in a forked child with no_new_privs, runs `probe` there, and returns
    /// the child's exit code.
    fn in_filtered_child(filter: &Filter, probe: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only makes system calls (and allocates, which glibc's fork
        // makes safe) and ends in _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: integer-only prctl.
                let nnp = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let code = if nnp != 0 || load(filter).is_err() {
                    100
                } else {
                    probe()
                };
                // SAFETY: ends the child without running the test harness's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).unwrap() {
                    nix::sys::wait::WaitStatus::Exited(_, code) => code,
                    other => panic!("the filtered child ended with {other:?}"),
                }
            }
        }
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// A syscall newer than the profile gets ENOSYS, one it knows the default errno.
    #[test]
    fn a_syscall_newer_than_the_profile_gets_enosys() {
        // Everything a forked child needs to report back, and nothing else.
        let p = profile(
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "syscalls": [
                {"names": ["exit", "exit_group", "getpid", "mkdir", "futex", "rt_sigprocmask",
                           "write", "munmap", "sched_yield"],
                 "action": "SCMP_ACT_ALLOW"},
                {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]}"#,
        )
        .unwrap();
        let newest = p.newest_known.expect("a newest syscall");
        assert_eq!(newest, libc::SYS_exit_group as u32);
        let filter = compile(&p).unwrap();
        let code = in_filtered_child(&filter, || {
            // Known to the profile, not allowed: the default errno.
            // SAFETY: integer-only raw syscalls.
            let known = unsafe { libc::syscall(libc::SYS_getuid) };
            if known != -1 || errno() != libc::EPERM {
                return 1;
            }
            // SAFETY: as above; the number is above every one the profile names.
            let newer = unsafe { libc::syscall(libc::SYS_getuid.max(i64::from(newest)) + 1) };
            if newer != -1 || errno() != libc::ENOSYS {
                return 2;
            }
            // SAFETY: as above; allowed.
            if unsafe { libc::syscall(libc::SYS_getpid) } <= 0 {
                return 3;
            }
            0
        });
        assert_eq!(code, 0);
        // No stub where the default action allows.
        let allow = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        assert!(enosys_stub(&allow).is_empty());
        assert_eq!(enosys_stub(&p).len(), 6);
    }

    #[test]
    fn a_loaded_filter_returns_the_profiles_errno() {
        let dir = tempfile::tempdir().unwrap();
        let p = profile(
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                 "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}
            ]}"#,
        )
        .unwrap();
        let filter = compile(&p).unwrap();
        let target = dir.path().join("x");
        let code = in_filtered_child(&filter, || {
            if std::fs::create_dir(&target).map_err(|e| e.raw_os_error()) != Err(Some(libc::EPERM))
            {
                return 1;
            }
            // PRIO_PGRP is 1: the condition on the first argument matches it only.
            // SAFETY: integer-only call.
            let group = unsafe { libc::getpriority(libc::PRIO_PGRP, 0) };
            if group != -1 || errno() != libc::EACCES {
                return 2;
            }
            // SAFETY: integer-only call.
            if unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } == -1 {
                return 3;
            }
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            if !status.lines().any(|l| l == "Seccomp:\t2") {
                return 4;
            }
            0
        });
        assert_eq!(code, 0);
        assert!(!target.exists());
        // The test process itself is not filtered.
        std::fs::create_dir(&target).unwrap();
    }
}
