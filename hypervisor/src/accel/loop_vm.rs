//! A throwaway one-vCPU VM that runs a counted loop in 64-bit mode at guest ring 0 or 3,
//! and times it.

use std::time::{Duration, Instant};

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

/// The short run: about 0.2 s when emulated at ~1M instructions/s (two instructions an
/// iteration), tens of microseconds on hardware.
const SHORT_RUN: u64 = 100_000;
/// Enough to touch every page the loop uses and enter the guest once.
const WARM_UP_RUN: u64 = 1_000;
/// The most a second, more precise run does: a few ms at hardware speed.
const LONG_RUN_MAX: u64 = 10_000_000;
/// Loop time (beyond the fixed cost of a run) that times the loop precisely enough.
const PRECISE_ENOUGH: Duration = Duration::from_millis(20);
/// What the longer run aims at when the short one was too quick to time.
const LONG_RUN_TARGET: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    Zero,
    Three,
}

/// Guest physical layout: 2 MiB identity-mapped by one large page.
const MEM_SIZE: usize = 2 << 20;
const GDT: u64 = 0x500;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
const CODE: u64 = 0x4000;
/// The port the loop writes to when done; nothing else in this VM exits there.
const DONE_PORT: u16 = 0xe9;
/// `1: dec rcx; jnz 1b; out 0xe9, al; hlt` — the count comes in RCX.
const LOOP_CODE: [u8; 8] = [0x48, 0xff, 0xc9, 0x75, 0xfb, 0xe6, 0xe9, 0xf4];
/// Where the `out` is.
const AT_OUT: u64 = CODE + 5;
/// Where RIP is after the `out`.
const AFTER_OUT: u64 = CODE + 7;

/// Iterations per second from two runs of `n_short` and `n_long` iterations: the
/// difference cancels the fixed cost of each run. Timer noise that makes the longer run
/// no longer falls back to the longer run alone.
fn marginal_rate(n_short: u64, t_short: Duration, n_long: u64, t_long: Duration) -> f64 {
    match t_long.checked_sub(t_short) {
        Some(delta) if n_long > n_short && !delta.is_zero() => {
            (n_long - n_short) as f64 / delta.as_secs_f64()
        }
        _ => n_long as f64 / t_long.as_secs_f64().max(1e-9),
    }
}

/// Whether the vCPU stopped at the loop's `out`, as each kind of KVM reports it: with
/// VMX/SVM the fast port-I/O path exits to userspace with RIP still *on* the instruction
/// and skips it on the next KVM_RUN (the kernel's `complete_fast_pio_out`); a KVM that
/// emulates guest ring 0 (PVM) has already moved RIP past it.
fn stopped_at_out(rcx: u64, rip: u64) -> bool {
    rcx == 0 && (rip == AT_OUT || rip == AFTER_OUT)
}

/// Present, writable, user-accessible (ring 3 runs the same code through the same tables).
const PTE_PRW_USER: u64 = 0x7;
const PDE_LARGE: u64 = 0x80;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Reserved bit 1, plus IOPL 3 so that ring 3 may `out` too.
const RFLAGS: u64 = 0x2 | (3 << 12);

/// Selectors of the GDT below: code and data at DPL 0, then at DPL 3.
const SEL_CODE0: u16 = 0x08;
const SEL_DATA0: u16 = 0x10;
const SEL_CODE3: u16 = 0x18 | 3;
const SEL_DATA3: u16 = 0x20 | 3;
const GDT_ENTRIES: [u64; 5] = [
    0,
    0x00af_9b00_0000_ffff, // 64-bit code, DPL 0
    0x00cf_9300_0000_ffff, // data, DPL 0
    0x00af_fb00_0000_ffff, // 64-bit code, DPL 3
    0x00cf_f300_0000_ffff, // data, DPL 3
];

/// Anonymous memory given to the probe VM; unmapped when dropped.
struct GuestMemory {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread moves the
// only handle to it.
unsafe impl Send for GuestMemory {}

impl GuestMemory {
    fn new(len: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping: no file, no fixed address, so it
        // cannot alias any memory Rust knows of; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(GuestMemory {
            ptr: ptr.cast(),
            len,
        })
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let offset = offset as usize;
        assert!(
            offset + bytes.len() <= self.len,
            "probe layout out of bounds"
        );
        // SAFETY: the range is inside the mapping (checked above), which lives as long as
        // `self`; the guest does not run while we write.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(offset), bytes.len()) }
    }

    fn write_u64s(&mut self, offset: u64, values: &[u64]) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(offset, &bytes);
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the VM using it is dropped
        // first (field order of `LoopVm`), so no vCPU can touch it afterwards.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A one-vCPU VM that runs `LOOP_CODE` in 64-bit mode.
pub struct LoopVm {
    // Dropped in this order: vCPU, VM, then the memory they used.
    vcpu: VcpuFd,
    _vm: VmFd,
    _mem: GuestMemory,
}

impl LoopVm {
    pub fn new(kvm: &Kvm) -> Result<Self, String> {
        let vm = kvm
            .create_vm()
            .map_err(|e| format!("cannot create a VM: {e}"))?;
        let mut mem =
            GuestMemory::new(MEM_SIZE).map_err(|e| format!("cannot map guest memory: {e}"))?;
        mem.write_u64s(GDT, &GDT_ENTRIES);
        mem.write_u64s(PML4, &[PDPT | PTE_PRW_USER]);
        mem.write_u64s(PDPT, &[PD | PTE_PRW_USER]);
        mem.write_u64s(PD, &[PTE_PRW_USER | PDE_LARGE]);
        mem.write(CODE, &LOOP_CODE);
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: MEM_SIZE as u64,
            userspace_addr: mem.ptr as u64,
        };
        // SAFETY: the region is our own mapping of exactly `memory_size` bytes, and it
        // outlives the VM (see `LoopVm`'s field order).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("cannot add guest memory: {e}"))?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| format!("cannot create a vCPU: {e}"))?;
        // Long mode needs CPUID to advertise it, or KVM refuses EFER.LME.
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
        Ok(LoopVm {
            vcpu,
            _vm: vm,
            _mem: mem,
        })
    }

    /// Loop iterations per second at `ring`. A warm-up run first pays the one-time costs
    /// of a fresh vCPU (page tables, nested state); then a short run and a longer one,
    /// whose difference cancels the cost of entering and leaving the guest. That cost is
    /// small on hardware but tens of milliseconds for nested KVM under an emulated CPU,
    /// where it would otherwise pass for slow guest code.
    pub fn rate(&mut self, ring: Ring) -> Result<f64, String> {
        self.run_loop(ring, WARM_UP_RUN)?;
        // A run this short is nearly all fixed cost: the baseline the others subtract.
        let base = self.run_loop(ring, WARM_UP_RUN)?;
        let short = self.run_loop(ring, SHORT_RUN)?;
        let estimate = marginal_rate(WARM_UP_RUN, base, SHORT_RUN, short);
        if short.saturating_sub(base) >= PRECISE_ENOUGH {
            // Slow enough (emulated) that the short run timed the loop well.
            return Ok(estimate);
        }
        let n =
            ((estimate * LONG_RUN_TARGET.as_secs_f64()) as u64).clamp(2 * SHORT_RUN, LONG_RUN_MAX);
        let long = self.run_loop(ring, n)?;
        Ok(marginal_rate(WARM_UP_RUN, base, n, long))
    }

    /// Runs the loop `iterations` times at `ring` and returns how long KVM_RUN took.
    fn run_loop(&mut self, ring: Ring, iterations: u64) -> Result<Duration, String> {
        self.set_mode(ring)?;
        let mut regs = self
            .vcpu
            .get_regs()
            .map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        regs.rip = CODE;
        regs.rflags = RFLAGS;
        regs.rcx = iterations;
        self.vcpu
            .set_regs(&regs)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
        let start = Instant::now();
        let exit = match self.vcpu.run() {
            Ok(VcpuExit::IoOut(DONE_PORT, _)) => None,
            Ok(other) => Some(format!("unexpected exit {other:?}")),
            Err(e) => Some(format!("KVM_RUN: {e}")),
        };
        let elapsed = start.elapsed();
        if let Some(why) = exit {
            return Err(why);
        }
        // A guest that faulted early could also exit fast: only a completed loop counts.
        let regs = self
            .vcpu
            .get_regs()
            .map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        if !stopped_at_out(regs.rcx, regs.rip) {
            return Err(format!(
                "loop did not complete (rcx {:#x}, rip {:#x})",
                regs.rcx, regs.rip
            ));
        }
        Ok(elapsed)
    }

    fn set_mode(&self, ring: Ring) -> Result<(), String> {
        let mut sregs = self
            .vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        let (code_sel, data_sel, dpl) = match ring {
            Ring::Zero => (SEL_CODE0, SEL_DATA0, 0),
            Ring::Three => (SEL_CODE3, SEL_DATA3, 3),
        };
        let code = segment(code_sel, dpl, true);
        let data = segment(data_sel, dpl, false);
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.gdt.base = GDT;
        sregs.gdt.limit = (GDT_ENTRIES.len() * 8 - 1) as u16;
        sregs.cr3 = PML4;
        sregs.cr4 = CR4_PAE;
        sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        sregs.efer = EFER_LME | EFER_LMA;
        self.vcpu.set_sregs(&sregs).map_err(|e| {
            format!(
                "KVM_SET_SREGS (64-bit, ring {}): {e}",
                if ring == Ring::Zero { 0 } else { 3 }
            )
        })
    }
}

/// A flat segment as KVM takes it (the descriptor caches; the GDT mirrors them).
fn segment(selector: u16, dpl: u8, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        // Execute/read or read/write, accessed.
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl,
        // A 64-bit code segment must have D clear.
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_cost_of_a_run_cancels_out() {
        let ms = Duration::from_millis;
        // Nested KVM under TCG: 50 ms to enter and leave, 100M iterations/s.
        let rate = marginal_rate(100_000, ms(51), 2_000_000, ms(70));
        assert!((rate - 100e6).abs() < 1e6, "{rate}");
        // PVM: no fixed cost to speak of, 0.7M iterations/s, and it stays that slow.
        let rate = marginal_rate(100_000, ms(143), 200_000, ms(286));
        assert!((rate - 0.7e6).abs() < 0.01e6, "{rate}");
        // A longer run that timed no longer: the long run alone.
        let rate = marginal_rate(100_000, ms(20), 200_000, ms(20));
        assert!((rate - 10e6).abs() < 1.0, "{rate}");
    }

    #[test]
    fn the_out_counts_with_rip_on_it_or_past_it() {
        // SVM/VMX (RIP on the `out`) and PVM (past it) both finished the loop.
        assert!(stopped_at_out(0, AT_OUT));
        assert!(stopped_at_out(0, AFTER_OUT));
        // An unfinished loop, or a stop anywhere else, is not a completed run.
        assert!(!stopped_at_out(1, AT_OUT));
        assert!(!stopped_at_out(0, CODE));
        assert!(!stopped_at_out(0, CODE + 3));
        assert!(!stopped_at_out(0, AFTER_OUT + 1));
    }

    #[test]
    fn gdt_matches_the_segment_caches() {
        // Access byte (bits 40..48) of each descriptor: P | DPL | S | type.
        for (sel, dpl, code) in [
            (SEL_CODE0, 0u8, true),
            (SEL_DATA0, 0, false),
            (SEL_CODE3, 3, true),
            (SEL_DATA3, 3, false),
        ] {
            let seg = segment(sel, dpl, code);
            let access = (GDT_ENTRIES[usize::from(sel >> 3)] >> 40) as u8;
            let expected = 0x80 | (seg.dpl << 5) | 0x10 | seg.type_;
            assert_eq!(access, expected, "selector {sel:#x}");
        }
    }
}
