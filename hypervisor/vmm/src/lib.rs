//! ward-vmm: one process per sandbox, running one microVM on KVM.

pub mod acpi;
pub mod api;
pub mod arch;
pub mod boot;
pub mod bus;
pub mod config;
pub mod devices;
pub mod logging;
pub mod seccomp;
pub mod vmm;
pub mod vstate;
