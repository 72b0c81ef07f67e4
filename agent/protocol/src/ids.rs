//! Identifier rules shared by the runtime (which names state directories after container IDs)
//! and the agent (which names guest paths and cgroups after them).

use thiserror::Error;

/// runc refuses IDs longer than this; so do we.
pub const MAX_ID_LEN: usize = 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdError {
    #[error("invalid container ID: the ID is empty")]
    Empty,
    #[error("invalid container ID {0:?}: longer than {MAX_ID_LEN} bytes")]
    TooLong(String),
    #[error("invalid container ID {0:?}: it contains a NUL byte")]
    Nul(String),
    #[error("invalid container ID {0:?}: it contains '/'")]
    Slash(String),
    #[error("invalid container ID {0:?}: '.' and '..' are not IDs")]
    Dots(String),
    #[error("invalid container ID {0:?}: only letters, digits, '_', '+', '-' and '.' are allowed")]
    Character(String),
}

/// Checks a container or exec ID: it must be usable as one path component, everywhere.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        let shown: String = id.chars().take(32).collect();
        return Err(IdError::TooLong(format!("{shown}...")));
    }
    if id.contains('\0') {
        return Err(IdError::Nul(id.replace('\0', "\\0")));
    }
    if id.contains('/') {
        return Err(IdError::Slash(id.to_string()));
    }
    if id == "." || id == ".." {
        return Err(IdError::Dots(id.to_string()));
    }
    if id.contains("..") {
        return Err(IdError::Dots(id.to_string()));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
    {
        return Err(IdError::Character(id.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_runc_style_ids() {
        for id in [
            "a",
            "web-1",
            "pod_2.ctr+x",
            "0123456789abcdef",
            &"x".repeat(MAX_ID_LEN),
        ] {
            assert_eq!(validate_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn rejects_what_cannot_be_a_path_component() {
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert!(matches!(validate_id("a/b"), Err(IdError::Slash(_))));
        assert!(matches!(validate_id(".."), Err(IdError::Dots(_))));
        assert!(matches!(validate_id("."), Err(IdError::Dots(_))));
        assert!(matches!(validate_id("a..b"), Err(IdError::Dots(_))));
        assert!(matches!(validate_id("a\0b"), Err(IdError::Nul(_))));
        assert!(matches!(
            validate_id(&"x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong(_))
        ));
        assert!(matches!(validate_id("a b"), Err(IdError::Character(_))));
        assert!(matches!(validate_id("é"), Err(IdError::Character(_))));
    }
}
