//! Fuzzes the stdio stream header, the first line of every stream connection, as the
//! agent reads it (`read_line` bounded by MAX_HEADER_LEN, then `StreamHeader::parse`).
//! What parses must encode back to the same line, and parse to the same header again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_agent_protocol::stream::{read_line, StreamHeader, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let mut reader = data;
    let Ok(line) = read_line(&mut reader, MAX_HEADER_LEN) else {
        return;
    };
    assert!(line.len() <= MAX_HEADER_LEN);
    if let Ok(header) = StreamHeader::parse(&line) {
        let encoded = header.encode();
        assert_eq!(
            encoded.as_bytes(),
            &line[..],
            "parse accepted a non-canonical line"
        );
        assert_eq!(StreamHeader::parse(encoded.as_bytes()), Ok(header));
    }
});
