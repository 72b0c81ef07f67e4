//! The contract between the ward runtime (host) and `ward-agent` (guest).
//!
//! Two channels cross the VM boundary, both over vsock:
//! - control: the ttrpc `Agent` service generated from `proto/agent.proto`, on
//!   [`AGENT_VSOCK_PORT`];
//! - data: one vsock connection per stdio stream of a guest process, on
//!   [`STREAM_VSOCK_PORT`], opened by the host and introduced by the handshake in [`stream`].

pub mod ids;
pub mod stream;

// Generated code: lints are the generator's business, not ours.
#[allow(
    clippy::all,
    unused_mut,
    unused_imports,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/agent.rs"));
}

// Generated code: lints are the generator's business, not ours.
#[allow(
    clippy::all,
    unused_mut,
    unused_imports,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals
)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
}

/// Bumped on every incompatible change of the service or the stream handshake.
pub const PROTOCOL_VERSION: u32 = 6;

/// Where the agent keeps the network namespaces it makes for single containers
/// (SetupNetworkRequest.namespace): a container's spec names `<dir>/<namespace>`.
pub const GUEST_NETNS_DIR: &str = "/run/ward/netns";

/// The guest port the agent's ttrpc server listens on.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// The guest port the agent accepts stdio stream connections on.
pub const STREAM_VSOCK_PORT: u32 = 1025;

/// The agent's version, reported by Check and GetGuestDetails and compared by the runtime.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
