//! virtio-vsock (socket device, ID 19).
