//! virtio-blk (block device, ID 2).
