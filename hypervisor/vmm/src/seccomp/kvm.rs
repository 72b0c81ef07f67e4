//! The KVM ioctl request numbers the filters allow, encoded as linux/kvm.h does (`_IO`,
//! `_IOR`, `_IOW`, `_IOWR` with the size of the argument's struct).

use std::mem::size_of;

use kvm_bindings::{
    kvm_cpuid2, kvm_fpu, kvm_ioeventfd, kvm_irqfd, kvm_lapic_state, kvm_msrs, kvm_regs, kvm_sregs,
    kvm_translation, kvm_vcpu_events, KVMIO,
};

const NONE: u64 = 0;
const WRITE: u64 = 1;
const READ: u64 = 2;

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((KVMIO as u64) << 8) | nr
}

const fn io(nr: u64) -> u64 {
    ioc(NONE, nr, 0)
}

const fn ior<T>(nr: u64) -> u64 {
    ioc(READ, nr, size_of::<T>())
}

const fn iow<T>(nr: u64) -> u64 {
    ioc(WRITE, nr, size_of::<T>())
}

const fn iowr<T>(nr: u64) -> u64 {
    ioc(READ | WRITE, nr, size_of::<T>())
}

// Made before any filter is installed, and then never again: tests check it is refused.
#[cfg(test)]
pub const KVM_GET_API_VERSION: u64 = io(0x00);
// Made before any filter is installed, and then never again: tests check it is refused.
#[cfg(test)]
pub const KVM_CREATE_VM: u64 = io(0x01);
// Made before any filter is installed, and then never again: tests check it is refused.
#[cfg(test)]
pub const KVM_CHECK_EXTENSION: u64 = io(0x03);
pub const KVM_GET_VCPU_MMAP_SIZE: u64 = io(0x04);
// Made before any filter is installed, and then never again: tests check it is refused.
#[cfg(test)]
pub const KVM_GET_SUPPORTED_CPUID: u64 = iowr::<kvm_cpuid2>(0x05);
pub const KVM_CREATE_VCPU: u64 = io(0x41);
// Made before any filter is installed, and then never again: tests check it is refused.
#[cfg(test)]
pub const KVM_SET_USER_MEMORY_REGION: u64 = iow::<kvm_bindings::kvm_userspace_memory_region>(0x46);
// Made before any filter is installed, and then never again: tests check it is refused.
#[cfg(test)]
pub const KVM_SET_TSS_ADDR: u64 = io(0x47);
// Made before any filter is installed, and then never again: tests check it is refused.
#[cfg(test)]
pub const KVM_SET_IDENTITY_MAP_ADDR: u64 = iow::<u64>(0x48);
// Made before any filter is installed, and then never again: tests check it is refused.
#[cfg(test)]
pub const KVM_CREATE_IRQCHIP: u64 = io(0x60);
pub const KVM_IRQFD: u64 = iow::<kvm_irqfd>(0x76);
pub const KVM_IOEVENTFD: u64 = iow::<kvm_ioeventfd>(0x79);
pub const KVM_RUN: u64 = io(0x80);
pub const KVM_GET_REGS: u64 = ior::<kvm_regs>(0x81);
pub const KVM_SET_REGS: u64 = iow::<kvm_regs>(0x82);
pub const KVM_GET_SREGS: u64 = ior::<kvm_sregs>(0x83);
pub const KVM_SET_SREGS: u64 = iow::<kvm_sregs>(0x84);
pub const KVM_TRANSLATE: u64 = iowr::<kvm_translation>(0x85);
pub const KVM_SET_MSRS: u64 = iow::<kvm_msrs>(0x89);
pub const KVM_SET_FPU: u64 = iow::<kvm_fpu>(0x8d);
pub const KVM_GET_LAPIC: u64 = ior::<kvm_lapic_state>(0x8e);
pub const KVM_SET_LAPIC: u64 = iow::<kvm_lapic_state>(0x8f);
pub const KVM_SET_CPUID2: u64 = iow::<kvm_cpuid2>(0x90);
pub const KVM_GET_VCPU_EVENTS: u64 = ior::<kvm_vcpu_events>(0x9f);
pub const KVM_SET_VCPU_EVENTS: u64 = iow::<kvm_vcpu_events>(0xa0);

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from linux/kvm.h as compiled for x86_64 (strace prints them by name).
    #[test]
    fn numbers_match_the_kernel_headers() {
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_CREATE_VCPU, 0xae41);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_SET_REGS, 0x4090_ae82);
        assert_eq!(KVM_IRQFD, 0x4020_ae76);
        assert_eq!(KVM_IOEVENTFD, 0x4040_ae79);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xc008_ae05);
    }
}
