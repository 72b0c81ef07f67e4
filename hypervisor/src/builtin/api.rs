//! The client of ward-vmm's control socket: one JSON object per line each way, one reply
//! per request (`{"ok": true, ...}` or `{"ok": false, "error": "..."}`). `add_net` sends the
//! tap with its line, by SCM_RIGHTS.

use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
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
        self.call_with_fd(request, None)
    }

    /// [`ApiClient::call`], with `fd` attached to the request line (ward-vmm gets its own
    /// copy; the caller's stays open).
    fn call_with_fd(&mut self, request: &Value, fd: Option<BorrowedFd<'_>>) -> Result<Value> {
        let op = request["op"].as_str().unwrap_or("?").to_string();
        let mut line = request.to_string();
        line.push('\n');
        let sent = match fd {
            // The whole line in one sendmsg with the descriptor, as ward-vmm expects; what a
            // full socket buffer leaves over goes after it.
            Some(fd) => send_with_fd(&self.writer, line.as_bytes(), fd).and_then(|n| {
                self.writer
                    .write_all(&line.as_bytes()[n..])
                    .map_err(|e| e.to_string())
            }),
            None => self
                .writer
                .write_all(line.as_bytes())
                .map_err(|e| e.to_string()),
        };
        sent.map_err(|e| Error::Api(format!("{op}: sending: {e}")))?;
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
        Ok(ids(&info["disks"]))
    }

    pub fn set_vcpus(&mut self, count: u32) -> Result<()> {
        self.call(&json!({"op": "set_vcpus", "count": count}))
            .map(drop)
    }

    /// Hot-adds a network card on `tap` (ward-vmm gets a copy of the descriptor).
    pub fn add_net(
        &mut self,
        id: &str,
        mac: &[u8; 6],
        mtu: u32,
        tap: BorrowedFd<'_>,
    ) -> Result<()> {
        let request = json!({"op": "add_net", "id": id, "mac": crate::format_mac(mac), "mtu": mtu});
        self.call_with_fd(&request, Some(tap)).map(drop)
    }

    /// Asks the guest to let go of network card `id`; it is gone from [`ApiClient::net_ids`]
    /// once the guest has.
    pub fn remove_net(&mut self, id: &str) -> Result<()> {
        self.call(&json!({"op": "remove_net", "id": id})).map(drop)
    }

    /// The IDs of the hot-added network cards the VM has now, those being removed included
    /// (cards given at start have none).
    pub fn net_ids(&mut self) -> Result<Vec<String>> {
        let info = self.call(&json!({"op": "info"}))?;
        Ok(ids(&info["nets"]))
    }
}

/// The `id`s of a list of objects in a reply.
fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|d| d["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One sendmsg of `bytes` with `fd` attached: how many bytes went (at least one, with the
/// descriptor).
fn send_with_fd(
    stream: &UnixStream,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
) -> std::result::Result<usize, String> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let fds = [fd.as_raw_fd()];
    loop {
        match sendmsg::<UnixAddr>(
            stream.as_raw_fd(),
            &[IoSlice::new(bytes)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(0) => return Err("the socket took nothing".into()),
            Ok(n) => return Ok(n),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.to_string()),
        }
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
pub(crate) mod tests {
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

    /// A stand-in for ward-vmm: accepts one connection and answers each request line with
    /// the next of `replies`; returns the lines and the descriptors that came with each.
    pub(crate) fn fake_vmm(
        listener: UnixListener,
        replies: Vec<Value>,
    ) -> std::thread::JoinHandle<Vec<(Value, Vec<std::os::fd::OwnedFd>)>> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::io::IoSliceMut;
        use std::os::fd::{FromRawFd, OwnedFd, RawFd};
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut pending: Vec<u8> = Vec::new();
            let mut fds: Vec<OwnedFd> = Vec::new();
            for reply in replies {
                while !pending.contains(&b'\n') {
                    let mut buf = [0u8; 4096];
                    let mut iov = [IoSliceMut::new(&mut buf)];
                    let mut space = nix::cmsg_space!([RawFd; 4]);
                    let msg = recvmsg::<()>(
                        conn.as_raw_fd(),
                        &mut iov,
                        Some(&mut space),
                        MsgFlags::MSG_CMSG_CLOEXEC,
                    )
                    .unwrap();
                    for c in msg.cmsgs().unwrap() {
                        if let ControlMessageOwned::ScmRights(received) = c {
                            // SAFETY: just received, owned by nothing else.
                            fds.extend(
                                received
                                    .into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                    let n = msg.bytes;
                    assert!(n > 0, "the client hung up");
                    pending.extend_from_slice(&buf[..n]);
                }
                let end = pending.iter().position(|&b| b == b'\n').unwrap();
                let line: Vec<u8> = pending.drain(..=end).collect();
                got.push((
                    serde_json::from_slice(&line).unwrap(),
                    std::mem::take(&mut fds),
                ));
                (&conn).write_all(format!("{reply}\n").as_bytes()).unwrap();
            }
            got
        })
    }

    #[test]
    fn add_net_sends_the_tap_with_its_line() {
        use std::os::fd::AsFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let server = fake_vmm(
            UnixListener::bind(&path).unwrap(),
            vec![
                json!({"ok": true}),
                json!({"ok": false, "error": "a network card with id \"n1\" is already attached"}),
                json!({"ok": true, "pending": true}),
                json!({"ok": true, "nets": [
                    {"id": null, "mac": "02:00:00:00:00:10"},
                    {"id": "n1", "mac": "02:00:00:00:00:01", "state": "removing"},
                ]}),
            ],
        );
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut client = ApiClient::connect(&path, Duration::from_secs(5)).unwrap();
        client
            .add_net("n1", &[2, 0, 0, 0, 0, 1], 1500, w.as_fd())
            .unwrap();
        let e = client
            .add_net("n1", &[2, 0, 0, 0, 0, 1], 1500, w.as_fd())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "VMM API: add_net: a network card with id \"n1\" is already attached"
        );
        client.remove_net("n1").unwrap();
        assert_eq!(client.net_ids().unwrap(), vec!["n1".to_string()]);
        let got = server.join().unwrap();
        let lines: Vec<&Value> = got.iter().map(|(l, _)| l).collect();
        let add = json!({"op": "add_net", "id": "n1", "mac": "02:00:00:00:00:01", "mtu": 1500});
        assert_eq!(
            lines,
            vec![
                &add,
                &add,
                &json!({"op": "remove_net", "id": "n1"}),
                &json!({"op": "info"}),
            ]
        );
        let counts: Vec<usize> = got.iter().map(|(_, fds)| fds.len()).collect();
        assert_eq!(
            counts,
            vec![1, 1, 0, 0],
            "one descriptor, with add_net only"
        );
        // What arrived is a copy of the caller's pipe, which stays open.
        nix::unistd::write(&got[0].1[0], b"vmm").unwrap();
        nix::unistd::write(&w, b"+me").unwrap();
        let mut buf = [0u8; 6];
        assert_eq!(nix::unistd::read(r.as_raw_fd(), &mut buf).unwrap(), 6);
        assert_eq!(&buf, b"vmm+me");
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
