//! KVM state: guest memory, the VM, its vCPUs.

pub mod assist;
pub mod memory;
pub mod vcpu;
pub mod vm;
