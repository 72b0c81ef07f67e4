//! How the agent's errors reach the host: every module has its own `thiserror` enum, and
//! each of those says which ttrpc status code it stands for through [`Coded`]. The server
//! turns any of them into a `ttrpc::Error::RpcStatus` whose message is the error's full
//! `Display` text (which names the container and the failing step).

use ttrpc::Code;

/// An error that knows which ttrpc status code describes it.
pub trait Coded: std::error::Error {
    fn code(&self) -> Code;
}

/// The status the host receives for `error`.
pub fn to_status<E: Coded + ?Sized>(error: &E) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(error.code(), error.to_string()))
}

/// A short name for a code, for the log.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::OK => "OK",
        Code::CANCELLED => "CANCELLED",
        Code::UNKNOWN => "UNKNOWN",
        Code::INVALID_ARGUMENT => "INVALID_ARGUMENT",
        Code::DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
        Code::NOT_FOUND => "NOT_FOUND",
        Code::ALREADY_EXISTS => "ALREADY_EXISTS",
        Code::PERMISSION_DENIED => "PERMISSION_DENIED",
        Code::RESOURCE_EXHAUSTED => "RESOURCE_EXHAUSTED",
        Code::FAILED_PRECONDITION => "FAILED_PRECONDITION",
        Code::ABORTED => "ABORTED",
        Code::OUT_OF_RANGE => "OUT_OF_RANGE",
        Code::UNIMPLEMENTED => "UNIMPLEMENTED",
        Code::INTERNAL => "INTERNAL",
        Code::UNAVAILABLE => "UNAVAILABLE",
        Code::DATA_LOSS => "DATA_LOSS",
        Code::UNAUTHENTICATED => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thiserror::Error;

    #[derive(Debug, Error)]
    #[error("container {0}: no such thing")]
    struct Missing(&'static str);

    impl Coded for Missing {
        fn code(&self) -> Code {
            Code::NOT_FOUND
        }
    }

    #[test]
    fn status_carries_code_and_message() {
        match to_status(&Missing("web")) {
            ttrpc::Error::RpcStatus(status) => {
                assert_eq!(status.code(), Code::NOT_FOUND);
                assert_eq!(status.message(), "container web: no such thing");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(code_name(Code::FAILED_PRECONDITION), "FAILED_PRECONDITION");
    }
}
