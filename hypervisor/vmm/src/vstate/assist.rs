//! Finishing guest instructions that KVM's instruction emulator refuses.
//!
//! On hosts that run guest ring 0 through KVM's emulator (PVM), a kernel instruction the
//! emulator lacks ends in KVM_EXIT_INTERNAL_ERROR. A few of them Linux executes
//! unconditionally, whatever CPUID says, so the VMM completes them itself:
//!
//! - `int3` (alternatives self-test at boot, live code patching): the emulator cannot
//!   raise a software interrupt outside real mode. It is a trap, so RIP moves past it
//!   and #BP is injected.
//! - `lfence`/`mfence`/`sfence`: the exit to this process already orders everything.
//! - `clac`/`stac` (SMAP): flip RFLAGS.AC.
//! - `fwait`: waits for pending unmasked x87 exceptions; the kernel runs with them
//!   masked (seen on the path that starts a user-mode helper at power-off).
//!
//! Feature-gated instructions (XSAVE, POPCNT, RDRAND, FSGSBASE, ...) are kept out with
//! kernel parameters instead; see `boot::cmdline::EMULATED_RING0`.

use kvm_bindings::{kvm_regs, kvm_vcpu_events};

/// What to do with the instruction at RIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assist {
    /// Advance RIP by `len` and inject exception `vector` (a trap).
    Trap { len: u64, vector: u8 },
    /// Advance RIP by `len`; set or clear RFLAGS bits.
    Skip { len: u64, set: u64, clear: u64 },
}

const RFLAGS_AC: u64 = 1 << 18;
const BP_VECTOR: u8 = 3;

/// Decodes the instructions above from the bytes at RIP.
pub fn decode(insn: &[u8]) -> Option<Assist> {
    match insn {
        [0xcc, ..] => Some(Assist::Trap {
            len: 1,
            vector: BP_VECTOR,
        }),
        [0x9b, ..] => Some(Assist::Skip {
            len: 1,
            set: 0,
            clear: 0,
        }),
        [0x0f, 0xae, 0xe8 | 0xf0 | 0xf8, ..] => Some(Assist::Skip {
            len: 3,
            set: 0,
            clear: 0,
        }),
        [0x0f, 0x01, 0xca, ..] => Some(Assist::Skip {
            len: 3,
            set: 0,
            clear: RFLAGS_AC,
        }),
        [0x0f, 0x01, 0xcb, ..] => Some(Assist::Skip {
            len: 3,
            set: RFLAGS_AC,
            clear: 0,
        }),
        _ => None,
    }
}

/// Applies `assist` to the vCPU state; `events` is only changed for traps.
pub fn apply(assist: Assist, regs: &mut kvm_regs, events: &mut kvm_vcpu_events) {
    match assist {
        Assist::Trap { len, vector } => {
            regs.rip = regs.rip.wrapping_add(len);
            events.exception.injected = 1;
            events.exception.nr = vector;
            events.exception.has_error_code = 0;
            events.exception.error_code = 0;
        }
        Assist::Skip { len, set, clear } => {
            regs.rip = regs.rip.wrapping_add(len);
            regs.rflags = (regs.rflags | set) & !clear;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_known_instructions_only() {
        assert!(matches!(
            decode(&[0xcc, 0x90]),
            Some(Assist::Trap { len: 1, .. })
        ));
        assert!(matches!(
            decode(&[0x0f, 0xae, 0xe8]),
            Some(Assist::Skip { len: 3, .. })
        ));
        assert!(matches!(
            decode(&[0x9b, 0x65]),
            Some(Assist::Skip { len: 1, .. })
        ));
        assert!(decode(&[0x0f, 0xae, 0x2f]).is_none()); // xrstor
        assert!(decode(&[0x0f, 0x01]).is_none());
        assert!(decode(&[]).is_none());
    }

    #[test]
    fn int3_traps_after_the_instruction() {
        let mut regs = kvm_regs {
            rip: 0x1000,
            ..Default::default()
        };
        let mut ev = kvm_vcpu_events::default();
        apply(decode(&[0xcc]).unwrap(), &mut regs, &mut ev);
        assert_eq!(regs.rip, 0x1001);
        assert_eq!(ev.exception.injected, 1);
        assert_eq!(ev.exception.nr, 3);
    }

    #[test]
    fn clac_and_stac_flip_ac() {
        let mut regs = kvm_regs {
            rflags: 0x2 | RFLAGS_AC,
            ..Default::default()
        };
        let mut ev = kvm_vcpu_events::default();
        apply(decode(&[0x0f, 0x01, 0xca]).unwrap(), &mut regs, &mut ev);
        assert_eq!(regs.rflags & RFLAGS_AC, 0);
        apply(decode(&[0x0f, 0x01, 0xcb]).unwrap(), &mut regs, &mut ev);
        assert_ne!(regs.rflags & RFLAGS_AC, 0);
        assert_eq!(regs.rip, 6);
        assert_eq!(ev.exception.injected, 0);
    }
}
