//! ward's lifecycle library: one microVM per sandbox (`sandbox`), the containers in it
//! (`container`), the host process standing for each guest process (`relay`), the host
//! diagnostics (`check`), and the runc-compatible command line over them (`cli`).

pub mod check;
pub mod cli;
pub mod config;
pub mod container;
pub mod hooks;
pub mod logging;
pub mod network;
pub mod relay;
pub mod sandbox;
pub mod shim;
