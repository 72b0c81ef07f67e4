//! virtio-net (network device, ID 1) over a tap: one receive and one transmit queue, no
//! control queue, no offloads (the guest sends and receives whole, checksummed frames).

mod device;
pub mod frame;
pub(crate) mod tap;

use std::io;
use std::os::fd::RawFd;

pub use device::Net;
pub use frame::{parse_rx, parse_tx, write_rx, FrameError, RxBuffers, TxPacket, MAX_PACKET_LEN};
pub use tap::Tap;

/// Why the device could not be built or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("tap fd {fd} is not an open file descriptor: {source}")]
    NotOpen {
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error("cannot duplicate tap fd {fd}: {source}")]
    Dup {
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error("fd {fd} is not a tap (TUNGETIFF): {source}")]
    NotTap {
        fd: RawFd,
        #[source]
        source: io::Error,
    },
    #[error("tap {name} (fd {fd}) was opened without {flag}")]
    TapFlags {
        fd: RawFd,
        name: String,
        flag: &'static str,
    },
    #[error("cannot set up tap {name} ({what}): {source}")]
    TapSetup {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("reading tap {name}: {source}")]
    TapRead {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot poll tap {name}: {source}")]
    Poll {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot put a used buffer in the net {queue} queue: {source}")]
    UsedRing {
        queue: &'static str,
        source: virtio_queue::Error,
    },
    #[error("cannot interrupt the guest: {0}")]
    Interrupt(#[source] io::Error),
}

// pub(crate): the hotplug tests (vmm/hotplug.rs) make taps with its helpers.
#[cfg(test)]
pub(crate) mod tests;
