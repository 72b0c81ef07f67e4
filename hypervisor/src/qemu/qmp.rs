//! A small client of QEMU's machine protocol (QMP): one JSON object per line each way.
//!
//! After the greeting and `qmp_capabilities`, each command gets exactly one answer,
//! `{"return": ...}` or `{"error": {...}}`; asynchronous events (`{"event": ...}`) may
//! come in between and are skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde_json::{json, Value};

use crate::{Error, Result};

/// How long one answer may take; QMP commands we use are immediate.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct QmpClient {
    path: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// What `query-status` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStatus {
    pub running: bool,
    /// "running", "paused", "shutdown", "internal-error", ...
    pub status: String,
}

impl QmpClient {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<QmpClient> {
        let stream = UnixStream::connect(path)
            .map_err(|e| Error::Qmp(format!("cannot connect to {}: {e}", path.display())))?;
        let io = |e| Error::Qmp(format!("{}: {e}", path.display()));
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let writer = stream.try_clone().map_err(io)?;
        let mut client = QmpClient {
            path: path.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = client.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(client.err(format!("expected the QMP greeting, got {greeting}")));
        }
        client.execute("qmp_capabilities", None)?;
        Ok(client)
    }

    /// Runs `command` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let line = request_line(command, arguments);
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| self.err(format!("sending {command}: {e}")))?;
        self.answer(command)
    }

    /// Runs `command` with `fd` attached to it (SCM_RIGHTS), as `getfd` and `add-fd`
    /// want: QEMU gets its own copy of the descriptor.
    pub fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        fd: BorrowedFd<'_>,
    ) -> Result<Value> {
        let line = request_line(command, arguments);
        let fds = [fd.as_raw_fd()];
        let control = [ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(line.as_bytes())];
        let sent = sendmsg::<()>(
            self.writer.as_raw_fd(),
            &iov,
            &control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(|e| self.err(format!("sending {command} with a descriptor: {e}")))?;
        // The descriptor went with the first byte; the rest of the line (if the socket
        // took only part of it) follows plainly.
        if sent < line.len() {
            self.writer
                .write_all(&line.as_bytes()[sent..])
                .map_err(|e| self.err(format!("sending {command}: {e}")))?;
        }
        self.answer(command)
    }

    fn answer(&mut self, command: &str) -> Result<Value> {
        loop {
            let message = self.read_message()?;
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let class = error.get("class").and_then(Value::as_str).unwrap_or("?");
                let desc = error.get("desc").and_then(Value::as_str).unwrap_or("");
                return Err(self.err(format!("{command} failed: {class}: {desc}")));
            }
            if message.get("event").is_none() {
                return Err(self.err(format!("unexpected message {message}")));
            }
        }
    }

    /// Asks QEMU to exit. Its going away while answering counts as success.
    pub fn quit(&mut self) -> Result<()> {
        match self.execute("quit", None) {
            Ok(_) => Ok(()),
            Err(Error::Qmp(msg)) if msg.contains("connection closed") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn query_status(&mut self) -> Result<VmStatus> {
        let value = self.execute("query-status", None)?;
        let running = value.get("running").and_then(Value::as_bool);
        let status = value.get("status").and_then(Value::as_str);
        match (running, status) {
            (Some(running), Some(status)) => Ok(VmStatus {
                running,
                status: status.to_string(),
            }),
            _ => Err(self.err(format!("odd query-status answer {value}"))),
        }
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| self.err(format!("reading: {e}")))?;
            if n == 0 {
                return Err(self.err("connection closed".to_string()));
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        serde_json::from_str(&line)
            .map_err(|e| self.err(format!("bad JSON {:?}: {e}", line.trim_end())))
    }

    fn err(&self, message: String) -> Error {
        Error::Qmp(format!("{}: {message}", self.path.display()))
    }
}

fn request_line(command: &str, arguments: Option<Value>) -> String {
    let mut request = json!({ "execute": command });
    if let Some(args) = arguments {
        request["arguments"] = args;
    }
    let mut line = request.to_string();
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// A QMP peer that answers a script: for each expected command, the lines to send.
    fn fake_qemu(
        dir: &Path,
        greeting: &'static str,
        script: Vec<(&'static str, Vec<&'static str>)>,
    ) -> (PathBuf, std::thread::JoinHandle<Vec<Value>>) {
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut writer = stream.try_clone().expect("clone");
            let mut reader = BufReader::new(stream);
            writeln!(writer, "{greeting}").expect("greet");
            let mut seen = Vec::new();
            for (expected, answers) in script {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read");
                let request: Value = serde_json::from_str(&line).expect("request JSON");
                assert_eq!(request["execute"], expected);
                seen.push(request);
                for answer in answers {
                    write!(writer, "{answer}\r\n").expect("answer");
                }
            }
            seen
        });
        (path, handle)
    }

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}"#;

    #[test]
    fn negotiates_skips_events_and_returns_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, server) = fake_qemu(
            dir.path(),
            GREETING,
            vec![
                ("qmp_capabilities", vec![r#"{"return": {}}"#]),
                (
                    "query-status",
                    vec![
                        r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}"#,
                        "",
                        r#"{"return": {"status": "running", "singlestep": false, "running": true}}"#,
                    ],
                ),
                ("query-name", vec![r#"{"return": {"name": "vm"}}"#]),
            ],
        );
        let mut qmp = QmpClient::connect(&path, DEFAULT_TIMEOUT).expect("connect");
        let status = qmp.query_status().expect("status");
        assert_eq!(
            status,
            VmStatus {
                running: true,
                status: "running".into()
            }
        );
        let name = qmp
            .execute("query-name", Some(json!({"unused": 1})))
            .expect("name");
        assert_eq!(name["name"], "vm");
        let seen = server.join().expect("server");
        assert_eq!(seen[2]["arguments"]["unused"], 1);
    }

    #[test]
    fn a_descriptor_goes_with_its_command() {
        use nix::sys::socket::{recvmsg, ControlMessageOwned};
        use std::os::fd::{FromRawFd, OwnedFd};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut writer = stream.try_clone().expect("clone");
            writeln!(writer, "{GREETING}").expect("greet");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            reader.read_line(&mut line).expect("capabilities");
            writeln!(writer, r#"{{"return": {{}}}}"#).expect("answer");
            let mut buf = [0u8; 256];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let msg = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::empty(),
            )
            .expect("recvmsg");
            let mut received = None;
            for c in msg.cmsgs().expect("cmsgs") {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    received = fds.first().copied();
                }
            }
            let n = msg.bytes;
            let request: Value = serde_json::from_slice(&buf[..n]).expect("request");
            // SAFETY: the descriptor just arrived by SCM_RIGHTS and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(received.expect("a descriptor")) };
            std::fs::File::from(fd)
                .write_all(b"through QMP")
                .expect("write");
            writeln!(writer, r#"{{"return": {{}}}}"#).expect("answer");
            request
        });
        let (read, write) = nix::unistd::pipe().expect("pipe");
        let mut qmp = QmpClient::connect(&path, DEFAULT_TIMEOUT).expect("connect");
        use std::os::fd::AsFd;
        qmp.execute_with_fd("getfd", Some(json!({"fdname": "tap0"})), write.as_fd())
            .expect("getfd");
        drop(write);
        let request = server.join().expect("server");
        assert_eq!(request["execute"], "getfd");
        assert_eq!(request["arguments"]["fdname"], "tap0");
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(read), &mut got).expect("read");
        assert_eq!(got, "through QMP");
    }

    #[test]
    fn reports_errors_with_class_and_description() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, server) = fake_qemu(
            dir.path(),
            GREETING,
            vec![
                ("qmp_capabilities", vec![r#"{"return": {}}"#]),
                (
                    "nope",
                    vec![
                        r#"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#,
                    ],
                ),
            ],
        );
        let mut qmp = QmpClient::connect(&path, DEFAULT_TIMEOUT).expect("connect");
        let err = qmp.execute("nope", None).expect_err("must fail");
        assert!(err.to_string().contains("CommandNotFound"), "{err}");
        server.join().expect("server");
    }

    #[test]
    fn quit_tolerates_a_peer_that_goes_away() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, server) = fake_qemu(
            dir.path(),
            GREETING,
            vec![
                ("qmp_capabilities", vec![r#"{"return": {}}"#]),
                ("quit", vec![]),
            ],
        );
        let mut qmp = QmpClient::connect(&path, DEFAULT_TIMEOUT).expect("connect");
        let quit = std::thread::spawn(move || qmp.quit());
        server.join().expect("server");
        quit.join().expect("quit thread").expect("quit succeeds");
    }

    #[test]
    fn rejects_a_peer_without_greeting_and_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, server) = fake_qemu(dir.path(), r#"{"hello": 1}"#, vec![]);
        let err = QmpClient::connect(&path, DEFAULT_TIMEOUT)
            .err()
            .expect("no greeting");
        assert!(err.to_string().contains("greeting"), "{err}");
        server.join().expect("server");

        let path = dir.path().join("silent.sock");
        let _listener = UnixListener::bind(&path).expect("bind");
        let start = std::time::Instant::now();
        let err = QmpClient::connect(&path, Duration::from_millis(200))
            .err()
            .expect("silent peer");
        assert!(start.elapsed() < Duration::from_secs(3), "{err}");
    }
}
