//! Devices the guest sees.

pub mod virtio;
