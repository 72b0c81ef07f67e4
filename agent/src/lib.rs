//! The agent's modules, as a library: `ward-agent` (main.rs) is its binary, and the fuzz
//! targets (agent/fuzz) call the parsers of guest requests through it. See main.rs for
//! the layout.

pub mod container;
pub mod error;
pub mod hotplug;
pub mod init;
pub mod logging;
pub mod netdev;
pub mod network;
pub mod options;
pub mod process;
pub mod reaper;
pub mod server;
pub mod stream;
pub mod sysinfo;
pub mod terminal;
