//! Devices the guest sees.

pub mod legacy;
pub mod virtio;
