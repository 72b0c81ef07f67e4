//! The control socket's messages: one JSON object per line each way.
//!
//! `add_net` is the one request that carries a file descriptor: the tap, attached to the
//! request line by SCM_RIGHTS (see the module above). Its MAC address and MTU are checked
//! here, when the line is parsed.

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::config::{MAX_MTU, MIN_MTU};

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
    /// A network card on the tap attached to the request line. `mac` is written
    /// `aa:bb:cc:dd:ee:ff` (unicast, not all zero); `mtu` ([`MIN_MTU`] to [`MAX_MTU`], as
    /// for `--net`) is what the guest is told, if given.
    AddNet {
        id: String,
        #[serde(deserialize_with = "de_mac")]
        mac: [u8; 6],
        #[serde(default, deserialize_with = "de_mtu")]
        mtu: Option<u16>,
    },
    RemoveNet {
        id: String,
    },
}

impl Request {
    /// The `op` it was sent as.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Info => "info",
            Request::Shutdown { .. } => "shutdown",
            Request::AddDisk { .. } => "add_disk",
            Request::RemoveDisk { .. } => "remove_disk",
            Request::SetVcpus { .. } => "set_vcpus",
            Request::AddNet { .. } => "add_net",
            Request::RemoveNet { .. } => "remove_net",
        }
    }

    /// Whether the request comes with a file descriptor (exactly one).
    pub fn takes_fd(&self) -> bool {
        matches!(self, Request::AddNet { .. })
    }
}

fn de_mac<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
    let text = String::deserialize(d)?;
    let bad = |why: &str| serde::de::Error::custom(format!("mac {text:?}: {why}"));
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = parts
            .next()
            .filter(|p| (1..=2).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or_else(|| bad("must be six hex bytes a:b:c:d:e:f"))?;
    }
    if parts.next().is_some() {
        return Err(bad("must be six hex bytes a:b:c:d:e:f"));
    }
    if mac[0] & 1 != 0 {
        return Err(bad("must be a unicast address (first byte even)"));
    }
    if mac == [0; 6] {
        return Err(bad("must not be all zero"));
    }
    Ok(mac)
}

fn de_mtu<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    // Read wide, so that any number out of range gets the same message; null is no MTU.
    let Some(n) = Option::<u64>::deserialize(d)? else {
        return Ok(None);
    };
    u16::try_from(n)
        .ok()
        .filter(|m| (MIN_MTU..=MAX_MTU).contains(m))
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("mtu {n}: must be {MIN_MTU} to {MAX_MTU}")))
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
    fn add_net_and_remove_net() {
        assert_eq!(
            parse(r#"{"op":"add_net","id":"n1","mac":"aa:bb:cc:dd:ee:f0","mtu":1500}"#),
            Ok(Request::AddNet {
                id: "n1".into(),
                mac: [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf0],
                mtu: Some(1500)
            })
        );
        // One-digit bytes, either case; no MTU (or null): the guest picks its own.
        assert_eq!(
            parse(r#"{"op":"add_net","id":"n1","mac":"2:0:A:b:c:FF"}"#),
            Ok(Request::AddNet {
                id: "n1".into(),
                mac: [2, 0, 0xa, 0xb, 0xc, 0xff],
                mtu: None
            })
        );
        assert_eq!(
            parse(r#"{"op":"add_net","id":"n1","mac":"02:00:00:00:00:01","mtu":null}"#)
                .map(|r| matches!(r, Request::AddNet { mtu: None, .. })),
            Ok(true)
        );
        // The bounds are included.
        for mtu in [68, 65521] {
            let line =
                format!(r#"{{"op":"add_net","id":"n1","mac":"02:00:00:00:00:01","mtu":{mtu}}}"#);
            assert!(
                matches!(parse(&line), Ok(Request::AddNet { mtu: Some(m), .. }) if u32::from(m) == mtu),
                "{line}"
            );
        }
        assert_eq!(
            parse(r#"{"op":"remove_net","id":"n1"}"#),
            Ok(Request::RemoveNet { id: "n1".into() })
        );
        assert!(Request::AddNet {
            id: "n1".into(),
            mac: [2, 0, 0, 0, 0, 1],
            mtu: None
        }
        .takes_fd());
        assert!(!Request::RemoveNet { id: "n1".into() }.takes_fd());
        assert!(!Request::Ping.takes_fd());
        assert_eq!(Request::RemoveNet { id: "n1".into() }.op(), "remove_net");
    }

    #[test]
    fn add_net_is_refused_with_a_reason() {
        let add = |fields: &str| parse(&format!(r#"{{"op":"add_net",{fields}}}"#));
        let refused = |fields: &str, why: &str| {
            let e = add(fields).expect_err(fields);
            assert!(e.starts_with("bad request: "), "{e}");
            assert!(e.contains(why), "{fields}: {e}");
        };
        for mac in [
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb:cc:dd:ee:",
            "aa:bb:cc:dd:ee:fff",
            "aa:bb:cc:dd:ee:gg",
            "aa-bb-cc-dd-ee-ff",
            "aa:bb:cc:dd:ee:+f",
            "",
        ] {
            refused(
                &format!(r#""id":"n1","mac":"{mac}""#),
                "must be six hex bytes",
            );
        }
        refused(r#""id":"n1","mac":"01:00:5e:00:00:01""#, "unicast");
        refused(r#""id":"n1","mac":"ff:ff:ff:ff:ff:ff""#, "unicast");
        refused(r#""id":"n1","mac":"00:00:00:00:00:00""#, "all zero");
        refused(r#""id":"n1","mac":42"#, "invalid type");
        for mtu in ["67", "65522", "65535", "0", "4294967364"] {
            refused(
                &format!(r#""id":"n1","mac":"02:00:00:00:00:01","mtu":{mtu}"#),
                "must be 68 to 65521",
            );
        }
        refused(
            r#""id":"n1","mac":"02:00:00:00:00:01","mtu":-1"#,
            "invalid value",
        );
        refused(
            r#""id":"n1","mac":"02:00:00:00:00:01","mtu":"1500""#,
            "invalid type",
        );
        refused(r#""mac":"02:00:00:00:00:01""#, "missing field `id`");
        refused(r#""id":"n1""#, "missing field `mac`");
        refused(
            r#""id":"n1","mac":"02:00:00:00:00:01","tap":3"#,
            "unknown field `tap`",
        );
        assert!(parse(r#"{"op":"remove_net"}"#)
            .unwrap_err()
            .contains("missing field `id`"));
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
