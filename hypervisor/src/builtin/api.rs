//! The client of ward-vmm's control socket: one JSON object per line each way, one reply
//! per request (`{"ok": true, ...}` or `{"ok": false, "error": "..."}`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{Error, Result};

/// The longest reply ward-vmm sends; a longer line is a broken VMM, not a reply.
const MAX_REPLY: u64 = 64 * 1024;

pub struct ApiClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl ApiClient {
    pub fn connect(socket: &Path, timeout: Duration) -> Result<ApiClient> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| Error::Api(format!("connecting to {}: {e}", socket.display())))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| Error::io("setting the VMM API socket's timeouts", e))?;
        let writer = stream
            .try_clone()
            .map_err(|e| Error::io("duplicating the VMM API socket", e))?;
        Ok(ApiClient {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request and returns the reply's fields when it says ok.
    pub fn call(&mut self, request: &Value) -> Result<Value> {
        let op = request["op"].as_str().unwrap_or("?").to_string();
        let mut line = request.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::Api(format!("{op}: sending: {e}")))?;
        let mut reply = String::new();
        let n = std::io::Read::take(&mut self.reader, MAX_REPLY)
            .read_line(&mut reply)
            .map_err(|e| Error::Api(format!("{op}: reading the reply: {e}")))?;
        if n == 0 {
            return Err(Error::Api(format!("{op}: the VMM closed the connection")));
        }
        parse_reply(&op, &reply)
    }

    pub fn ping(&mut self) -> Result<()> {
        self.call(&json!({"op": "ping"})).map(drop)
    }

    pub fn shutdown(&mut self) -> Result<()> {
        self.call(&json!({"op": "shutdown"})).map(drop)
    }

    pub fn add_disk(&mut self, id: &str, path: &Path, read_only: bool) -> Result<()> {
        self.call(&json!({"op": "add_disk", "id": id, "path": path, "readonly": read_only}))
            .map(drop)
    }

    pub fn remove_disk(&mut self, id: &str) -> Result<()> {
        self.call(&json!({"op": "remove_disk", "id": id})).map(drop)
    }

    /// The IDs of the disks the VM has now, those being removed included.
    pub fn disk_ids(&mut self) -> Result<Vec<String>> {
        let info = self.call(&json!({"op": "info"}))?;
        Ok(info["disks"]
            .as_array()
            .map(|disks| {
                disks
                    .iter()
                    .filter_map(|d| d["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn set_vcpus(&mut self, count: u32) -> Result<()> {
        self.call(&json!({"op": "set_vcpus", "count": count}))
            .map(drop)
    }
}

fn parse_reply(op: &str, line: &str) -> Result<Value> {
    let value: Value = serde_json::from_str(line.trim_end())
        .map_err(|e| Error::Api(format!("{op}: malformed reply {:?}: {e}", line.trim_end())))?;
    match value["ok"].as_bool() {
        Some(true) => Ok(value),
        Some(false) => Err(Error::Api(format!(
            "{op}: {}",
            value["error"].as_str().unwrap_or("failed without a reason")
        ))),
        None => Err(Error::Api(format!(
            "{op}: reply without \"ok\": {}",
            line.trim_end()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn replies_are_parsed_and_errors_carry_the_reason() {
        assert!(parse_reply("ping", "{\"ok\":true}\n").is_ok());
        let err = parse_reply("add_disk", "{\"ok\":false,\"error\":\"no such file\"}").unwrap_err();
        assert_eq!(err.to_string(), "VMM API: add_disk: no such file");
        assert!(parse_reply("ping", "garbage").is_err());
        assert!(parse_reply("ping", "{}").is_err());
    }

    #[test]
    fn a_request_goes_out_as_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            (&conn).write_all(b"{\"ok\":true}\n").unwrap();
            line
        });
        let mut client = ApiClient::connect(&path, Duration::from_secs(5)).unwrap();
        client.set_vcpus(3).unwrap();
        let line = server.join().unwrap();
        let sent: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(sent, json!({"op": "set_vcpus", "count": 3}));
    }
}
