//! The stdio stream handshake.
//!
//! Design: every stdio stream of a guest process is a separate vsock connection, opened by
//! the host to [`crate::STREAM_VSOCK_PORT`]. The host's first bytes are one header line
//! naming the process and the stream; the agent answers one line, `OK` or `ERR <reason>`,
//! and from then on the connection carries the raw bytes of that stream: host to guest for
//! stdin, guest to host for stdout and stderr. The agent shuts the connection down when the
//! process's end of the pipe reaches EOF, and closes the process's stdin when the host
//! shuts its side down. Bytes are never polled for and never framed: the kernel's socket
//! buffers and vsock credit give flow control, so a slow reader slows the writer.
//!
//! The header is guest-visible, host-provided input: [`StreamHeader::parse`] is the one
//! function that reads it, bounded, and it is what the fuzz target calls.

use std::fmt;
use thiserror::Error;

use crate::ids::{validate_id, IdError};

/// Longest header line accepted, newline included.
pub const MAX_HEADER_LEN: usize = 2 * crate::ids::MAX_ID_LEN + 64;

const MAGIC: &str = "WARD-STREAM/1";

/// Which of the process's standard streams a connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Stdin,
    Stdout,
    Stderr,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdin => "stdin",
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

/// The first line of a stream connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    pub kind: StreamKind,
    pub container_id: String,
    /// Empty for the container's init process.
    pub exec_id: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("stream header is longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    #[error("stream header is not terminated by a newline")]
    Unterminated,
    #[error("stream header is not UTF-8")]
    NotUtf8,
    #[error("stream header does not start with {MAGIC}")]
    BadMagic,
    #[error("stream header has {0} fields, expected 4")]
    FieldCount(usize),
    #[error("unknown stream kind {0:?}")]
    BadKind(String),
    #[error("stream header: {0}")]
    BadId(#[from] IdError),
    #[error("stream reply: {0}")]
    Refused(String),
}

impl StreamHeader {
    /// The header line, newline included.
    pub fn encode(&self) -> String {
        let exec = if self.exec_id.is_empty() {
            "-"
        } else {
            &self.exec_id
        };
        format!(
            "{MAGIC} {} {} {}\n",
            self.kind.as_str(),
            self.container_id,
            exec
        )
    }

    /// Parses one header line (with its newline) as read off the connection.
    pub fn parse(line: &[u8]) -> Result<Self, HeaderError> {
        if line.len() > MAX_HEADER_LEN {
            return Err(HeaderError::TooLong);
        }
        let line = line.strip_suffix(b"\n").ok_or(HeaderError::Unterminated)?;
        let line = std::str::from_utf8(line).map_err(|_| HeaderError::NotUtf8)?;
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.first() != Some(&MAGIC) {
            return Err(HeaderError::BadMagic);
        }
        if fields.len() != 4 {
            return Err(HeaderError::FieldCount(fields.len()));
        }
        let kind = match fields[1] {
            "stdin" => StreamKind::Stdin,
            "stdout" => StreamKind::Stdout,
            "stderr" => StreamKind::Stderr,
            other => return Err(HeaderError::BadKind(other.chars().take(32).collect())),
        };
        validate_id(fields[2])?;
        let exec_id = match fields[3] {
            "-" => String::new(),
            id => {
                validate_id(id)?;
                id.to_string()
            }
        };
        Ok(StreamHeader {
            kind,
            container_id: fields[2].to_string(),
            exec_id,
        })
    }
}

impl fmt::Display for StreamHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.kind.as_str(), self.container_id)?;
        if !self.exec_id.is_empty() {
            write!(f, " exec {}", self.exec_id)?;
        }
        Ok(())
    }
}

/// Longest answer line, newline included: what a reader passes to [`read_line`]. Reasons
/// that would make a longer line are cut by [`encode_reply`].
pub const MAX_REPLY_LEN: usize = 1024;

/// The agent's answer line to a header, at most [`MAX_REPLY_LEN`] bytes.
pub fn encode_reply(result: &Result<(), String>) -> String {
    match result {
        Ok(()) => "OK\n".to_string(),
        Err(reason) => {
            let mut reason = reason.replace('\n', " ");
            // "ERR " and "\n" around it; cut on a character boundary.
            let mut end = reason.len().min(MAX_REPLY_LEN - 5);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            format!("ERR {reason}\n")
        }
    }
}

/// Reads the agent's answer line; `Err` carries the agent's reason.
pub fn parse_reply(line: &[u8]) -> Result<(), HeaderError> {
    let line = line.strip_suffix(b"\n").ok_or(HeaderError::Unterminated)?;
    let line = String::from_utf8_lossy(line);
    if line == "OK" {
        return Ok(());
    }
    Err(HeaderError::Refused(
        line.strip_prefix("ERR ").unwrap_or(&line).to_string(),
    ))
}

/// Reads bytes up to and including the first newline, one byte at a time so that nothing
/// after the line is consumed, giving up after `max` bytes.
pub fn read_line<R: std::io::Read>(reader: &mut R, max: usize) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(64);
    let mut byte = [0u8; 1];
    while line.len() < max {
        if reader.read(&mut byte)? == 0 {
            break;
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        for exec_id in ["", "exec-1"] {
            for kind in [StreamKind::Stdin, StreamKind::Stdout, StreamKind::Stderr] {
                let header = StreamHeader {
                    kind,
                    container_id: "web".into(),
                    exec_id: exec_id.into(),
                };
                assert_eq!(StreamHeader::parse(header.encode().as_bytes()), Ok(header));
            }
        }
    }

    #[test]
    fn header_rejects_garbage() {
        assert_eq!(
            StreamHeader::parse(b"WARD-STREAM/1 stdout a -"),
            Err(HeaderError::Unterminated)
        );
        assert_eq!(
            StreamHeader::parse(b"HTTP/1.1 GET /\n"),
            Err(HeaderError::BadMagic)
        );
        assert_eq!(
            StreamHeader::parse(b"WARD-STREAM/1 stdout a\n"),
            Err(HeaderError::FieldCount(3))
        );
        assert!(matches!(
            StreamHeader::parse(b"WARD-STREAM/1 stdlog a -\n"),
            Err(HeaderError::BadKind(_))
        ));
        assert!(matches!(
            StreamHeader::parse(b"WARD-STREAM/1 stdout ../x -\n"),
            Err(HeaderError::BadId(_))
        ));
        assert_eq!(
            StreamHeader::parse(&[b'a'; MAX_HEADER_LEN + 1]),
            Err(HeaderError::TooLong)
        );
        assert_eq!(
            StreamHeader::parse(b"WARD-STREAM/1 stdout \xff -\n"),
            Err(HeaderError::NotUtf8)
        );
    }

    #[test]
    fn reply_round_trips() {
        assert_eq!(parse_reply(encode_reply(&Ok(())).as_bytes()), Ok(()));
        assert_eq!(
            parse_reply(encode_reply(&Err("no such\nprocess".into())).as_bytes()),
            Err(HeaderError::Refused("no such process".into()))
        );
        // An ID-laden reason never makes a line a reader with MAX_REPLY_LEN would cut.
        let long = encode_reply(&Err("é".repeat(2000)));
        assert!(long.len() <= MAX_REPLY_LEN && long.ends_with('\n'));
        let mut reader = long.as_bytes();
        let line = read_line(&mut reader, MAX_REPLY_LEN).unwrap();
        assert!(matches!(parse_reply(&line), Err(HeaderError::Refused(_))));
    }

    #[test]
    fn read_line_stops_at_newline_and_limit() {
        let mut input: &[u8] = b"one\ntwo";
        assert_eq!(read_line(&mut input, 100).unwrap(), b"one\n");
        assert_eq!(input, b"two");
        let mut input: &[u8] = b"abcdef";
        assert_eq!(read_line(&mut input, 3).unwrap(), b"abc");
    }
}
