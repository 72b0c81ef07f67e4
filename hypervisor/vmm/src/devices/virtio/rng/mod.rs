//! virtio-rng (entropy device, ID 4): fills guest buffers from the host's getrandom.

mod device;
mod request;

pub use device::{Rng, RngError};
pub use request::{parse, RequestError, RngRequest, MAX_FILL};

#[cfg(test)]
mod tests;
