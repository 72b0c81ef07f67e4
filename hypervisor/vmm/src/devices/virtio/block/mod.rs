//! virtio-blk (block device, ID 2) over a raw image file.

mod device;
mod request;

pub use device::{Block, BlockConfig, BlockError};
pub use request::{
    parse, Limits, Rejected, Request, RequestError, RequestType, ID_LEN, SECTOR_SIZE,
};

#[cfg(test)]
mod tests;
