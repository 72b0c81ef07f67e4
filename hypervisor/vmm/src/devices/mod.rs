//! Devices the guest sees.

pub mod hotplug;
pub mod legacy;
pub mod virtio;
