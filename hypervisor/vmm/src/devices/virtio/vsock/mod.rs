//! virtio-vsock (socket device, ID 19) with the hybrid Unix-socket backend of Firecracker and
//! Cloud Hypervisor (also spoken by vhost-device-vsock):
//!
//! - host→guest: connect to `uds_path`, write `CONNECT <port>\n`, read `OK <host port>\n`,
//!   then the stream is the connection; a guest that refuses closes the client socket.
//! - guest→host: a guest connection to CID 2 port P is forwarded to the socket `<uds_path>_<P>`;
//!   when nothing listens there the guest gets a reset.

mod connection;
mod device;
pub mod packet;
mod unix;

pub use connection::CONN_BUF_ALLOC;
pub use device::{Vsock, VsockError};
pub use packet::{parse_tx, Header, PacketError, TxPacket};
pub use unix::{parse_connect, HandshakeError};

#[cfg(test)]
mod tests;
