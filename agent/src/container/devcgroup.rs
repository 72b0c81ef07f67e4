//! `linux.resources.devices` on cgroup v2: the rules become an eBPF program of type
//! BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's cgroup, as runc does there.
//!
//! Semantics, those of the v1 devices controller that the spec describes: the spec's rules
//! in order, then the devices every container may use (runc's list), and the last rule
//! that matches a request decides. An allow rule matches when it names the device and
//! grants every access asked for; a deny rule when it names the device and denies any
//! of them. With no rule matching the request is allowed (a cgroup without rules
//! restricts nothing), so a spec that denies nothing gets no program.
//!
//! `rules` and `program` are pure (the tests hold the program to a reference decision);
//! `attach` makes the two bpf(2) calls.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use thiserror::Error;

/// Most rules a spec may give (each is a few instructions; the verifier allows far more).
const MAX_RULES: usize = 1024;

// linux/bpf.h
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: u32 = 1;
const ACC_READ: u32 = 2;
const ACC_WRITE: u32 = 4;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DevCgroupError {
    #[error("linux.resources.devices has {0} rules, at most {MAX_RULES} are accepted")]
    TooMany(usize),
    #[error(
        "linux.resources.devices[{index}]: access {access:?} is not a combination of r, w and m"
    )]
    BadAccess { index: usize, access: String },
    #[error("linux.resources.devices[{index}]: type {typ:?} is not a, b or c")]
    BadType { index: usize, typ: String },
    #[error("linux.resources.devices[{index}]: {what} {value} is not a device number")]
    BadNumber {
        index: usize,
        what: &'static str,
        value: i64,
    },
}

/// One rule, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    /// BPF_DEVCG_DEV_BLOCK or _CHAR; None: every type.
    pub kind: Option<i32>,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// BPF_DEVCG_ACC_* bits.
    pub access: u32,
}

const fn allow(kind: i32, major: Option<u32>, minor: Option<u32>, access: u32) -> Rule {
    Rule {
        allow: true,
        kind: Some(kind),
        major,
        minor,
        access,
    }
}

const RWM: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// What every container may use whatever its spec says (runc's list): creating any node,
/// and the standard ones the agent puts in /dev, the console, terminals.
const DEFAULT_ALLOWED: [Rule; 11] = [
    allow(DEV_CHAR, None, None, ACC_MKNOD),
    allow(DEV_BLOCK, None, None, ACC_MKNOD),
    allow(DEV_CHAR, Some(1), Some(3), RWM), // null
    allow(DEV_CHAR, Some(1), Some(5), RWM), // zero
    allow(DEV_CHAR, Some(1), Some(7), RWM), // full
    allow(DEV_CHAR, Some(1), Some(8), RWM), // random
    allow(DEV_CHAR, Some(1), Some(9), RWM), // urandom
    allow(DEV_CHAR, Some(5), Some(0), RWM), // tty
    allow(DEV_CHAR, Some(5), Some(1), RWM), // console
    allow(DEV_CHAR, Some(5), Some(2), RWM), // ptmx
    allow(DEV_CHAR, Some(136), None, RWM),  // pts/*
];

/// A major (12 bits) or minor (20 bits) number; None for any.
fn number(
    index: usize,
    what: &'static str,
    value: Option<i64>,
) -> Result<Option<u32>, DevCgroupError> {
    let bits = if what == "major" { 12 } else { 20 };
    match value {
        // -1 is "any" in runc's spelling.
        None | Some(-1) => Ok(None),
        Some(v) if (0..1 << bits).contains(&v) => Ok(Some(v as u32)),
        Some(v) => Err(DevCgroupError::BadNumber {
            index,
            what,
            value: v,
        }),
    }
}

/// The spec's rules then the defaults; None when nothing is denied (no program needed).
pub fn rules(spec: &[LinuxDeviceCgroup]) -> Result<Option<Vec<Rule>>, DevCgroupError> {
    if spec.len() > MAX_RULES {
        return Err(DevCgroupError::TooMany(spec.len()));
    }
    let mut out = Vec::with_capacity(spec.len() + DEFAULT_ALLOWED.len());
    for (index, rule) in spec.iter().enumerate() {
        let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
            LinuxDeviceType::P => {
                return Err(DevCgroupError::BadType {
                    index,
                    typ: "p".into(),
                })
            }
        };
        let text = rule.access().clone().unwrap_or_else(|| "rwm".into());
        let mut access = 0;
        for c in text.chars() {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => {
                    return Err(DevCgroupError::BadAccess {
                        index,
                        access: text.clone(),
                    })
                }
            };
        }
        if access == 0 {
            return Err(DevCgroupError::BadAccess {
                index,
                access: text,
            });
        }
        out.push(Rule {
            allow: rule.allow(),
            kind,
            major: number(index, "major", rule.major())?,
            minor: number(index, "minor", rule.minor())?,
            access,
        });
    }
    if out.iter().all(|r| r.allow) {
        return Ok(None);
    }
    out.extend(DEFAULT_ALLOWED);
    Ok(Some(out))
}

// eBPF instruction encoding (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const JMP_EXIT: u8 = 0x95;

/// One instruction, as the kernel reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    fn bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

// Registers: r1 the context; r2 type, r3 access, r4 major, r5 minor, r6 scratch.
const R0: u8 = 0;
const R1: u8 = 1;
const TYPE: u8 = 2;
const ACCESS: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;
const SCRATCH: u8 = 6;

/// The rules as a program: each rule from the last one back is a block that either
/// returns its verdict or jumps to the next block.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut insns = vec![
        // struct bpf_cgroup_dev_ctx { u32 access_type (access << 16 | type); u32 major; u32 minor; }
        Insn::new(LDX_MEM_W, TYPE, R1, 0, 0),
        Insn::new(ALU64_MOV_X, ACCESS, TYPE, 0, 0),
        Insn::new(ALU64_AND_K, TYPE, 0, 0, 0xffff),
        Insn::new(ALU64_RSH_K, ACCESS, 0, 0, 16),
        Insn::new(LDX_MEM_W, MAJOR, R1, 4, 0),
        Insn::new(LDX_MEM_W, MINOR, R1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        // Each entry: the jump to take when the rule does not apply, with its condition.
        let mut block: Vec<Insn> = Vec::new();
        let mut skips: Vec<usize> = Vec::new();
        let mut skip_unless = |block: &mut Vec<Insn>, reg: u8, value: u32| {
            skips.push(block.len());
            // imm is 32 bits, compared with the zero-extended register.
            block.push(Insn::new(JMP_JNE_K, reg, 0, 0, value as i32));
        };
        if let Some(kind) = rule.kind {
            skip_unless(&mut block, TYPE, kind as u32);
        }
        if let Some(major) = rule.major {
            skip_unless(&mut block, MAJOR, major);
        }
        if let Some(minor) = rule.minor {
            skip_unless(&mut block, MINOR, minor);
        }
        if rule.access != RWM {
            block.push(Insn::new(ALU64_MOV_X, SCRATCH, ACCESS, 0, 0));
            if rule.allow {
                // Applies when nothing outside the rule's access is asked for.
                block.push(Insn::new(
                    ALU64_AND_K,
                    SCRATCH,
                    0,
                    0,
                    (!rule.access & RWM) as i32,
                ));
                skips.push(block.len());
                block.push(Insn::new(JMP_JNE_K, SCRATCH, 0, 0, 0));
            } else {
                // Applies when anything the rule denies is asked for.
                block.push(Insn::new(ALU64_AND_K, SCRATCH, 0, 0, rule.access as i32));
                skips.push(block.len());
                block.push(Insn::new(JMP_JEQ_K, SCRATCH, 0, 0, 0));
            }
        }
        block.push(Insn::new(ALU64_MOV_K, R0, 0, 0, i32::from(rule.allow)));
        block.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        let always = skips.is_empty();
        for at in skips {
            // A jump's offset counts from the instruction after it.
            block[at].off = (len - at - 1) as i16;
        }
        insns.extend(block);
        // A rule that applies to every request decides them all: what would follow is
        // unreachable, which the verifier refuses.
        if always {
            return insns;
        }
    }
    insns.push(Insn::new(ALU64_MOV_K, R0, 0, 0, 1));
    insns.push(Insn::new(JMP_EXIT, 0, 0, 0, 0));
    insns
}

/// A zeroed bpf_attr, as large as any the kernel reads for these two commands.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn put_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, at: usize, v: u64) {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, zero-padded bpf_attr of the size passed; the pointers in
    // it point to buffers the caller keeps alive across the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// Loads `insns` and attaches them to the cgroup directory `cgroup`. The attachment
/// holds the program for as long as the cgroup exists.
pub fn attach(cgroup: &Path, insns: &[Insn]) -> Result<(), String> {
    let code: Vec<u8> = insns.iter().flat_map(|i| i.bytes()).collect();
    let license = c"Apache-2.0";
    let load = |log: Option<&mut Vec<u8>>| {
        let mut attr = Attr([0; 128]);
        attr.put_u32(0, BPF_PROG_TYPE_CGROUP_DEVICE);
        attr.put_u32(4, insns.len() as u32);
        attr.put_u64(8, code.as_ptr() as u64);
        attr.put_u64(16, license.as_ptr() as u64);
        if let Some(log) = log {
            attr.put_u32(24, 1);
            attr.put_u32(28, log.len() as u32);
            attr.put_u64(32, log.as_mut_ptr() as u64);
        }
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    let prog = match load(None) {
        Ok(fd) => fd,
        Err(e) => {
            // Again with the verifier's log, for the error message.
            let mut log = vec![0u8; 64 * 1024];
            let _ = load(Some(&mut log));
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: String = text.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
            return Err(format!("loading the device program: {e} ({tail})"));
        }
    };
    // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor that we now own.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let dir = File::open(cgroup).map_err(|e| format!("opening {}: {e}", cgroup.display()))?;
    let mut attr = Attr([0; 128]);
    attr.put_u32(0, dir.as_raw_fd() as u32);
    attr.put_u32(4, prog.as_raw_fd() as u32);
    attr.put_u32(8, BPF_CGROUP_DEVICE);
    attr.put_u32(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut attr)
        .map(drop)
        .map_err(|e| format!("attaching the device program to {}: {e}", cgroup.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `rules` let a request through: the reference the program must agree with.
    fn decide(rules: &[Rule], kind: i32, major: u32, minor: u32, access: u32) -> bool {
        for rule in rules.iter().rev() {
            let names = !matches!(rule.kind, Some(k) if k != kind)
                && !matches!(rule.major, Some(m) if m != major)
                && !matches!(rule.minor, Some(m) if m != minor);
            if !names {
                continue;
            }
            if rule.allow && access & !rule.access == 0 {
                return true;
            }
            if !rule.allow && access & rule.access != 0 {
                return false;
            }
        }
        true
    }

    fn spec(json: serde_json::Value) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_value(json).unwrap()
    }

    /// Runs the program on one request, as the kernel's interpreter would (the subset of
    /// eBPF `program` emits).
    fn run(insns: &[Insn], kind: i32, major: u32, minor: u32, access: u32) -> bool {
        let ctx = [(access << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = insns[pc];
            let (d, s) = (i.dst as usize, i.src as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[d] = u64::from(ctx[i.off as usize / 4]),
                ALU64_MOV_X => r[d] = r[s],
                ALU64_MOV_K => r[d] = i.imm as i64 as u64,
                ALU64_AND_K => r[d] &= i.imm as i64 as u64,
                ALU64_RSH_K => r[d] >>= i.imm,
                JMP_JNE_K if r[d] != i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JEQ_K if r[d] == i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JNE_K | JMP_JEQ_K => {}
                JMP_EXIT => return r[0] == 1,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    /// The verifier refuses a program with an instruction no path reaches.
    fn assert_all_reachable(insns: &[Insn]) {
        let mut seen = vec![false; insns.len()];
        let mut todo = vec![0usize];
        while let Some(pc) = todo.pop() {
            if pc >= insns.len() || seen[pc] {
                continue;
            }
            seen[pc] = true;
            match insns[pc].code {
                JMP_EXIT => {}
                JMP_JNE_K | JMP_JEQ_K => {
                    todo.push(pc + 1);
                    todo.push(pc + 1 + insns[pc].off as usize);
                }
                _ => todo.push(pc + 1),
            }
        }
        let unreachable: Vec<usize> = (0..insns.len()).filter(|pc| !seen[*pc]).collect();
        assert!(
            unreachable.is_empty(),
            "unreachable instructions {unreachable:?}"
        );
    }

    #[test]
    fn every_instruction_is_reachable() {
        for json in [
            serde_json::json!([{"allow": false, "access": "rwm"}]),
            serde_json::json!([{"allow": false, "type": "c", "access": "w"}]),
            serde_json::json!([
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "w"},
                {"allow": false, "access": "rwm"},
            ]),
        ] {
            let rules = rules(&spec(json)).unwrap().unwrap();
            assert_all_reachable(&program(&rules));
        }
    }

    #[test]
    fn the_program_decides_as_the_rules_do() {
        let rules = rules(&spec(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "r"},
            {"allow": true, "type": "b", "major": 7, "access": "rw"},
            {"allow": false, "type": "b", "major": 7, "minor": 3, "access": "w"},
        ])))
        .unwrap()
        .expect("a deny rule: a program");
        let insns = program(&rules);
        let mut checked = 0;
        for kind in [DEV_BLOCK, DEV_CHAR] {
            for (major, minor) in [(1, 3), (1, 11), (7, 3), (7, 4), (136, 5), (4, 64), (5, 2)] {
                for access in 1..=7 {
                    assert_eq!(
                        run(&insns, kind, major, minor, access),
                        decide(&rules, kind, major, minor, access),
                        "type {kind} {major}:{minor} access {access}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 98);
        // What the rules mean, spelled out.
        assert!(decide(&rules, DEV_CHAR, 1, 11, ACC_READ));
        assert!(!decide(&rules, DEV_CHAR, 1, 11, ACC_WRITE));
        assert!(
            !decide(&rules, DEV_CHAR, 4, 64, ACC_READ),
            "denied by the first rule"
        );
        assert!(
            decide(&rules, DEV_CHAR, 1, 3, RWM),
            "null is always allowed"
        );
        assert!(
            decide(&rules, DEV_CHAR, 4, 64, ACC_MKNOD),
            "mknod is always allowed"
        );
        assert!(decide(&rules, DEV_BLOCK, 7, 4, ACC_READ | ACC_WRITE));
        assert!(
            !decide(&rules, DEV_BLOCK, 7, 3, ACC_READ | ACC_WRITE),
            "w denied later"
        );
        assert!(decide(&rules, DEV_BLOCK, 7, 3, ACC_READ));
        assert!(
            decide(&rules, DEV_CHAR, 136, 5, ACC_READ | ACC_WRITE),
            "terminals"
        );
    }

    #[test]
    fn rules_that_deny_nothing_need_no_program_and_bad_ones_are_named() {
        assert_eq!(rules(&spec(serde_json::json!([]))).unwrap(), None);
        assert_eq!(
            rules(&spec(serde_json::json!([{"allow": true, "access": "rwm"}]))).unwrap(),
            None
        );
        let err = rules(&spec(
            serde_json::json!([{"allow": false, "access": "rwx"}]),
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "linux.resources.devices[0]: access \"rwx\" is not a combination of r, w and m"
        );
        let err = rules(&spec(
            serde_json::json!([{"allow": false, "type": "c", "major": -5, "access": "r"}]),
        ))
        .unwrap_err();
        assert!(matches!(err, DevCgroupError::BadNumber { .. }), "{err}");
    }
}
