//! ward-vmm: one process per sandbox, running one microVM on KVM.

pub mod devices;
