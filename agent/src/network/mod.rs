//! The pod's network in the guest: the NICs the VMM made for the host's taps get the
//! names, MTUs, addresses and routes of the interfaces they stand for (SetupNetwork).
//!
//! - `plan`: the request checked and turned into typed values, in one function;
//! - `apply`: the plan carried out over netlink in the guest's network namespace, or in
//!   one `namespace` made for a single container.

pub mod apply;
pub mod namespace;
pub mod plan;

use thiserror::Error;
use ttrpc::Code;

use crate::error::Coded;

#[derive(Debug, Error)]
pub enum NetworkError {
    #[error("SetupNetwork: {0}")]
    Invalid(String),
    #[error("no network interface has MAC {mac} (for {name})")]
    NoSuchNic { mac: String, name: String },
    #[error("netlink: {what}: {message}")]
    Netlink { what: String, message: String },
    #[error("setting up the network did not finish within {0} s")]
    Timeout(u64),
    #[error("network namespace: {0}")]
    Namespace(String),
    #[error("releasing the network card {mac} for its unplug: {source}")]
    Release {
        mac: String,
        source: crate::hotplug::HotplugError,
    },
    #[error("starting the netlink runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl Coded for NetworkError {
    fn code(&self) -> Code {
        match self {
            NetworkError::Invalid(_) => Code::INVALID_ARGUMENT,
            NetworkError::NoSuchNic { .. } => Code::NOT_FOUND,
            NetworkError::Timeout(_) => Code::DEADLINE_EXCEEDED,
            NetworkError::Release { source, .. } => source.code(),
            _ => Code::INTERNAL,
        }
    }
}
