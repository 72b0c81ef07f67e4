//! virtio-mmio slot hotplug registers: the same selector layout as the CPU block
//! (`cpu::SelectorBlock`), indexed by slot number.

pub const REGISTER_BYTES: u64 = super::cpu::REGISTER_BYTES;
