//! The stdio stream listener (vsock port [`STREAM_VSOCK_PORT`]) and the pumps that join a
//! host connection to a process's pipe.
//!
//! End to end: the process's pipes exist from the moment it is created; the agent keeps its
//! ends in the `Process`. The host connects, sends one header line naming the container,
//! the exec (or none, for the init) and the stream; the agent takes that pipe end out of the
//! process (so each stream is attached at most once), answers `OK`, and one thread copies:
//! - stdin: connection → pipe until the host shuts its write side down, then the pipe is
//!   closed so the process reads EOF;
//! - stdout/stderr: pipe → connection until every writer of the pipe has closed it (the
//!   process and whatever inherited it exited), then the connection is shut down so the
//!   host reads EOF.
//!
//! Bytes written before the host attaches wait in the pipe: a full pipe blocks the writer,
//! nothing is dropped. The pumps are generic over the connection type so the tests run them
//! over Unix socket pairs.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use slog::{debug, info, warn, Logger};
use vsock::{VsockListener, VsockStream, VMADDR_CID_ANY};
use ward_agent_protocol::stream::{self, StreamHeader, StreamKind, MAX_HEADER_LEN};
use ward_agent_protocol::STREAM_VSOCK_PORT;

/// How long a new connection may take to send its header: an idle connection must not hold
/// a thread forever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest single write to a connection. vhost-device-vsock 0.3 (the host side of ward's
/// vsock) stalls for good on guest writes of 64 KiB (a full pipe's worth, read in one
/// go); smaller writes keep the stream flowing and cost nothing measurable.
const COPY_CHUNK: usize = 32 * 1024;

/// A connection whose halves can be shut down independently.
pub trait HalfClose {
    fn shutdown_read(&self) -> io::Result<()>;
    fn shutdown_write(&self) -> io::Result<()>;
}

impl HalfClose for UnixStream {
    fn shutdown_read(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Read)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl HalfClose for VsockStream {
    fn shutdown_read(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Read)
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// Copies `conn` into the process's stdin pipe until the host's EOF, then closes the pipe.
/// Returns the number of bytes copied. A process that exits (EPIPE) ends the copy too.
pub fn pump_stdin<C: Read + HalfClose>(mut conn: C, mut pipe: File) -> io::Result<u64> {
    let result = copy(&mut conn, &mut pipe);
    drop(pipe); // the process reads EOF
                // Nothing more will be read: tell the host (a no-op if it already closed).
    let _ = conn.shutdown_read();
    result
}

/// Copies the process's stdout or stderr pipe to `conn` until EOF, then shuts the
/// connection's write side down so the host reads EOF.
pub fn pump_output<C: Write + HalfClose>(mut pipe: File, mut conn: C) -> io::Result<u64> {
    let result = copy(&mut pipe, &mut conn);
    // Dropping the pipe on a host that went away makes the process's next write fail with
    // EPIPE/SIGPIPE instead of blocking forever on a full pipe.
    drop(pipe);
    let _ = conn.flush();
    let _ = conn.shutdown_write();
    result
}

/// io::copy, except that a broken peer (EPIPE, ECONNRESET) ends the copy quietly: that is
/// how the other side says it is gone.
fn copy<R: Read, W: Write>(from: &mut R, to: &mut W) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(total),
            // A terminal master reads EIO once every slave descriptor is closed: its EOF.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(total),
            Err(e) => return Err(e),
        };
        match to.write_all(&buf[..n]) {
            Ok(()) => total += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                return Ok(total)
            }
            Err(e) => return Err(e),
        }
    }
}

/// Finds a process's pipe end for a stream header; implemented by the container registry.
pub trait StreamSource: Send + Sync {
    fn take_stream(&self, header: &StreamHeader) -> Result<File, String>;
}

/// Reads the header of a new connection, attaches it and pumps until the stream ends.
/// Runs on the connection's own thread.
pub fn serve_connection<C>(mut conn: C, source: &dyn StreamSource, log: &Logger)
where
    C: Read + Write + HalfClose,
{
    let line = match stream::read_line(&mut conn, MAX_HEADER_LEN + 1) {
        Ok(line) => line,
        Err(e) => {
            warn!(log, "stream: reading the header failed"; "error" => e.to_string());
            return;
        }
    };
    let attached = StreamHeader::parse(&line)
        .map_err(|e| e.to_string())
        .and_then(|header| {
            let pipe = source.take_stream(&header)?;
            Ok((header, pipe))
        });
    let reply = stream::encode_reply(&attached.as_ref().map(|_| ()).map_err(Clone::clone));
    if let Err(e) = conn.write_all(reply.as_bytes()) {
        warn!(log, "stream: sending the reply failed"; "error" => e.to_string());
        return;
    }
    let (header, pipe) = match attached {
        Ok(attached) => attached,
        Err(reason) => {
            warn!(log, "stream refused"; "reason" => reason);
            return;
        }
    };
    let what = header.to_string();
    info!(log, "stream attached"; "stream" => &what);
    let result = match header.kind {
        StreamKind::Stdin => pump_stdin(conn, pipe),
        StreamKind::Stdout | StreamKind::Stderr => pump_output(pipe, conn),
    };
    match result {
        Ok(bytes) => debug!(log, "stream ended"; "stream" => &what, "bytes" => bytes),
        Err(e) => warn!(log, "stream failed"; "stream" => &what, "error" => e.to_string()),
    }
}

/// Binds the stream port; the caller runs [`accept_loop`] on its own thread.
pub fn listen() -> io::Result<VsockListener> {
    VsockListener::bind_with_cid_port(VMADDR_CID_ANY, STREAM_VSOCK_PORT)
}

/// Accepts stream connections forever, one thread each.
pub fn accept_loop(listener: VsockListener, source: Arc<dyn StreamSource>, log: Logger) {
    loop {
        let conn = match listener.accept() {
            Ok((conn, _addr)) => conn,
            Err(e) => {
                warn!(log, "stream: accept failed"; "error" => e.to_string());
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let source = source.clone();
        let conn_log = log.clone();
        let spawned = std::thread::Builder::new()
            .name("stream".into())
            .spawn(move || {
                // Only the header is bounded in time; the stream itself may idle for ever.
                let timed = conn.set_read_timeout(Some(HEADER_TIMEOUT));
                if let Err(e) = timed {
                    warn!(conn_log, "stream: setting the header timeout"; "error" => e.to_string());
                }
                serve_with_reset_timeout(conn, source.as_ref(), &conn_log);
            });
        if let Err(e) = spawned {
            warn!(log, "stream: no thread for a connection"; "error" => e.to_string());
        }
    }
}

/// A VsockStream whose read timeout is lifted once the header has been read.
struct HeaderTimed {
    conn: VsockStream,
    header_done: bool,
}

impl Read for HeaderTimed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.conn.read(buf)
    }
}

impl Write for HeaderTimed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.header_done {
            // The first write is the reply: the header has been read.
            self.header_done = true;
            self.conn.set_read_timeout(None)?;
        }
        self.conn.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.conn.flush()
    }
}

impl HalfClose for HeaderTimed {
    fn shutdown_read(&self) -> io::Result<()> {
        self.conn.shutdown_read()
    }
    fn shutdown_write(&self) -> io::Result<()> {
        self.conn.shutdown_write()
    }
}

fn serve_with_reset_timeout(conn: VsockStream, source: &dyn StreamSource, log: &Logger) {
    let conn = HeaderTimed {
        conn,
        header_done: false,
    };
    serve_connection(conn, source, log);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::Mutex;

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (File::from(r), File::from(w))
    }

    #[test]
    fn output_reaches_the_host_then_eof() {
        let (read_end, mut write_end) = pipe();
        let (agent_side, mut host_side) = UnixStream::pair().unwrap();
        // Written before the host attaches: waits in the pipe.
        write_end.write_all(b"early ").unwrap();
        let pump = std::thread::spawn(move || pump_output(read_end, agent_side));
        write_end.write_all(b"late").unwrap();
        drop(write_end); // the process exits
        let mut got = String::new();
        host_side.read_to_string(&mut got).unwrap(); // ends: the agent shut its side down
        assert_eq!(got, "early late");
        assert_eq!(pump.join().unwrap().unwrap(), 10);
    }

    #[test]
    fn host_eof_closes_stdin() {
        let (mut read_end, write_end) = pipe();
        let (agent_side, mut host_side) = UnixStream::pair().unwrap();
        let pump = std::thread::spawn(move || pump_stdin(agent_side, write_end));
        host_side.write_all(b"input\n").unwrap();
        host_side.shutdown(Shutdown::Write).unwrap();
        let mut got = String::new();
        read_end.read_to_string(&mut got).unwrap(); // EOF: the pump closed the pipe
        assert_eq!(got, "input\n");
        assert_eq!(pump.join().unwrap().unwrap(), 6);
    }

    #[test]
    fn a_gone_host_ends_the_output_pump_quietly() {
        let (read_end, mut write_end) = pipe();
        let (agent_side, host_side) = UnixStream::pair().unwrap();
        drop(host_side);
        let pump = std::thread::spawn(move || pump_output(read_end, agent_side));
        // The pump's write fails with EPIPE and it closes the pipe: our write fails too.
        let _ = write_end.write_all(b"x");
        let result = pump.join().unwrap();
        assert!(result.is_ok(), "{result:?}");
        let mut failed = false;
        for _ in 0..100 {
            if write_end.write_all(&[0u8; 4096]).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "writing to a pipe nobody reads must fail");
    }

    /// A registry with one process's stdout.
    struct OneStream(Mutex<Option<File>>);

    impl StreamSource for OneStream {
        fn take_stream(&self, header: &StreamHeader) -> Result<File, String> {
            if header.container_id != "c1" || header.kind != StreamKind::Stdout {
                return Err(format!("no {header}"));
            }
            self.0
                .lock()
                .unwrap()
                .take()
                .ok_or_else(|| "already attached".to_string())
        }
    }

    fn discard() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    fn attach(source: &Arc<OneStream>, header: &str) -> (String, UnixStream) {
        let (agent_side, mut host_side) = UnixStream::pair().unwrap();
        let source = source.clone();
        std::thread::spawn(move || serve_connection(agent_side, source.as_ref(), &discard()));
        host_side.write_all(header.as_bytes()).unwrap();
        let reply = stream::read_line(&mut host_side, 1024).unwrap();
        (String::from_utf8(reply).unwrap(), host_side)
    }

    #[test]
    fn handshake_attaches_once_and_refuses_garbage() {
        let (read_end, mut write_end) = pipe();
        let source = Arc::new(OneStream(Mutex::new(Some(read_end))));

        let (reply, _) = attach(&source, "HELLO\n");
        assert!(reply.starts_with("ERR "), "{reply}");
        let (reply, _) = attach(&source, "WARD-STREAM/1 stdout c2 -\n");
        assert_eq!(reply, "ERR no stdout of c2\n");

        let (reply, mut host) = attach(&source, "WARD-STREAM/1 stdout c1 -\n");
        assert_eq!(reply, "OK\n");
        write_end.write_all(b"hello\n").unwrap();
        drop(write_end);
        let mut got = String::new();
        host.read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello\n");

        let (reply, _) = attach(&source, "WARD-STREAM/1 stdout c1 -\n");
        assert_eq!(reply, "ERR already attached\n");
    }
}
