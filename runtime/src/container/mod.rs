//! Containers: bundles in, state on disk, the lifecycle state machine.

pub mod block_rootfs;
pub mod bundle;
pub mod devices;
pub mod guest_spec;
pub mod namespace_paths;
pub mod state;
pub mod store;

pub use state::Status;
pub use store::{Store, StoreError};
pub mod lifecycle;

pub use lifecycle::{Context, LifecycleError};
