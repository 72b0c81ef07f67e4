//! Fuzzes the runtime's side of the stream handshake: the agent's answer line, read with
//! `read_line` bounded by MAX_REPLY_LEN and parsed by `parse_reply` (guest data: a
//! compromised guest writes what it likes). Also checks that any refusal reason the agent
//! encodes fits the bound and reads back as a refusal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_agent_protocol::stream::{
    encode_reply, parse_reply, read_line, HeaderError, MAX_REPLY_LEN,
};

fuzz_target!(|data: &[u8]| {
    let mut reader = data;
    if let Ok(line) = read_line(&mut reader, MAX_REPLY_LEN) {
        assert!(line.len() <= MAX_REPLY_LEN);
        if parse_reply(&line).is_ok() {
            assert_eq!(line, b"OK\n");
        }
    }
    let reason = String::from_utf8_lossy(data).into_owned();
    let encoded = encode_reply(&Err(reason));
    assert!(encoded.len() <= MAX_REPLY_LEN, "{} bytes", encoded.len());
    assert!(matches!(
        parse_reply(encoded.as_bytes()),
        Err(HeaderError::Refused(_))
    ));
});
