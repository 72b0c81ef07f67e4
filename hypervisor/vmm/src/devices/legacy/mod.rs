//! Legacy PC devices on port I/O.

pub mod i8042;
pub mod serial;
