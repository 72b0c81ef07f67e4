//! x86_64: address layout, boot CPU state, CPUID and MSRs, the memory map.

pub mod cpuid;
pub mod e820;
pub mod gdt;
pub mod layout;
pub mod msr;
pub mod regs;
