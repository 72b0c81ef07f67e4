//! The control socket's messages: one JSON object per line each way.

use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Ping,
    Info,
    /// Graceful if the guest has ACPI (it is asked to power off), forced after
    /// `grace_ms` (default [`DEFAULT_SHUTDOWN_GRACE_MS`]) or at once without ACPI.
    Shutdown {
        #[serde(default)]
        grace_ms: Option<u64>,
    },
    AddDisk {
        id: String,
        path: std::path::PathBuf,
        #[serde(default)]
        readonly: bool,
    },
    RemoveDisk {
        id: String,
    },
    SetVcpus {
        count: u32,
    },
}

pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 2000;

/// A reply: `{"ok":true, ...fields}` or `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok(Value),
    Err(String),
}

impl Reply {
    pub fn ok() -> Self {
        Reply::Ok(json!({}))
    }

    pub fn to_line(&self) -> String {
        let mut v = match self {
            Reply::Ok(Value::Object(fields)) => {
                let mut m = fields.clone();
                m.insert("ok".into(), Value::Bool(true));
                Value::Object(m)
            }
            Reply::Ok(_) => json!({"ok": true}),
            Reply::Err(e) => json!({"ok": false, "error": e}),
        }
        .to_string();
        v.push('\n');
        v
    }
}

/// Parses one request line; the error is the reply's message.
pub fn parse(line: &str) -> Result<Request, String> {
    serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_op() {
        assert_eq!(parse(r#"{"op":"ping"}"#), Ok(Request::Ping));
        assert_eq!(parse(r#"{"op":"info"}"#), Ok(Request::Info));
        assert_eq!(
            parse(r#"{"op":"shutdown"}"#),
            Ok(Request::Shutdown { grace_ms: None })
        );
        assert_eq!(
            parse(r#"{"op":"add_disk","id":"d1","path":"/x.img","readonly":false}"#),
            Ok(Request::AddDisk {
                id: "d1".into(),
                path: "/x.img".into(),
                readonly: false
            })
        );
        assert_eq!(
            parse(r#"{"op":"remove_disk","id":"d1"}"#),
            Ok(Request::RemoveDisk { id: "d1".into() })
        );
        assert_eq!(
            parse(r#"{"op":"set_vcpus","count":3}"#),
            Ok(Request::SetVcpus { count: 3 })
        );
        assert!(parse(r#"{"op":"reboot"}"#).is_err());
        assert!(parse(r#"{"op":"set_vcpus"}"#).is_err());
        assert!(parse("not json").is_err());
    }

    #[test]
    fn replies_are_one_line() {
        assert_eq!(Reply::ok().to_line(), "{\"ok\":true}\n");
        let l = Reply::Ok(json!({"state": "running"})).to_line();
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(v["state"], "running");
        assert_eq!(
            Reply::Err("no".into()).to_line(),
            "{\"error\":\"no\",\"ok\":false}\n"
        );
    }
}
