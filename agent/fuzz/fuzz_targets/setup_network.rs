//! Fuzzes SetupNetwork's request: the protobuf message decoded, then `plan::parse`
//! (names, MACs, addresses, routes, the bounds on their counts).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protobuf::Message;
use ward_agent::network::plan;
use ward_agent_protocol::agent::SetupNetworkRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = SetupNetworkRequest::parse_from_bytes(data) {
        let _ = plan::parse(&request);
    }
});
