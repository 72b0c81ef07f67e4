//! Hotplug signalling: the Generic Event Device that interrupts the guest, and the
//! register blocks its AML reads to learn which CPU or virtio slot changed.

pub mod cpu;
pub mod ged;
pub mod slots;
