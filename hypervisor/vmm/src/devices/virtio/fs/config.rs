//! The virtio-fs configuration space (virtio 1.2, section 5.11.4).

/// Length of the tag field; a tag of exactly this length has no terminating NUL.
pub const TAG_LEN: usize = 36;
/// `tag[36]` followed by `num_request_queues` (le32).
pub const CONFIG_SIZE: usize = TAG_LEN + 4;

/// Why a mount tag is not usable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("virtio-fs tag is empty")]
    Empty,
    #[error("virtio-fs tag {tag:?} is {len} bytes long, the limit is {TAG_LEN}")]
    TooLong { tag: String, len: usize },
    #[error("virtio-fs tag {tag:?} contains a NUL byte")]
    Nul { tag: String },
}

/// The device configuration the guest reads: the tag it mounts by and the request queue count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsConfig {
    bytes: [u8; CONFIG_SIZE],
}

impl FsConfig {
    pub fn new(tag: &str, num_request_queues: u32) -> Result<Self, TagError> {
        let raw = tag.as_bytes();
        if raw.is_empty() {
            return Err(TagError::Empty);
        }
        if raw.len() > TAG_LEN {
            return Err(TagError::TooLong {
                tag: tag.to_string(),
                len: raw.len(),
            });
        }
        // The guest reads the tag up to the first NUL: one inside it would truncate the tag.
        if raw.contains(&0) {
            return Err(TagError::Nul {
                tag: tag.to_string(),
            });
        }
        let mut bytes = [0u8; CONFIG_SIZE];
        bytes[..raw.len()].copy_from_slice(raw);
        bytes[TAG_LEN..].copy_from_slice(&num_request_queues.to_le_bytes());
        Ok(Self { bytes })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The tag as given (the NUL padding removed).
    pub fn tag(&self) -> &str {
        let end = self.bytes[..TAG_LEN]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(TAG_LEN);
        // Built from a `&str` cut at a NUL that the str did not contain: the bytes are UTF-8.
        std::str::from_utf8(&self.bytes[..end]).unwrap_or_default()
    }

    pub fn num_request_queues(&self) -> u32 {
        let mut n = [0u8; 4];
        n.copy_from_slice(&self.bytes[TAG_LEN..]);
        u32::from_le_bytes(n)
    }
}
