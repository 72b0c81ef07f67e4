//! Tests of the virtio-mmio register interface.
