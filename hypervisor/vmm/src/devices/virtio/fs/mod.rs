//! virtio-fs (file system device, ID 26) as a vhost-user frontend to virtiofsd.
//!
//! The guest's FUSE requests never pass through the VMM: virtiofsd maps guest memory from the
//! memfds we send it, pops the hiprio and request queues itself when the guest kicks them
//! (the kick EventFds are the transport's QueueNotify EventFds, which the core registers as
//! KVM ioeventfds) and signals completions on call EventFds. A forwarder thread turns those
//! calls into [`Interrupt::trigger`](super::Interrupt::trigger) so that the InterruptStatus
//! register has its USED_RING bit set before the guest takes the interrupt.
//!
//! Queue 0 is the hiprio queue (FORGET, INTERRUPT), queues 1..=N the request queues. The VMM
//! serves the configuration space (tag and number of request queues) itself.

mod config;
mod device;

pub use config::{FsConfig, TagError, CONFIG_SIZE, TAG_LEN};
pub use device::{Fs, FsError, MAX_QUEUE_SIZE, MAX_REQUEST_QUEUES, SUPPORTED_FEATURES};

#[cfg(test)]
mod tests;
