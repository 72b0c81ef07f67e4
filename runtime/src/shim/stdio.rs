//! A guest process's stdio between the agent's stream connections and the FIFOs
//! containerd names in Create and Exec (an empty path: that stream is not wanted).
//!
//! Output FIFOs are opened read-write: that open never blocks, and our own read end keeps
//! writes from failing with EPIPE when the client that reads them goes away (`ctr run -d`
//! exits right after start), as containerd's runc shim does. The stdin FIFO is opened
//! read-only in a thread of its own: that open waits for a writer, and reading a FIFO
//! before any writer has opened it would look like end of file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use slog::{debug, warn, Logger};
use thiserror::Error;
use ward_hypervisor::VsockConnection;

use crate::relay::Streams;

#[derive(Debug, Error)]
pub enum StdioError {
    #[error("container \"{id}\": opening the {stream} FIFO {path}: {source}")]
    Fifo {
        id: String,
        stream: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container \"{id}\": duplicating the {stream} stream: {source}")]
    Clone {
        id: String,
        stream: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The FIFO paths of one process, as containerd sent them.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

/// The copies running for one process.
pub struct Attached {
    /// A duplicate of the guest stdin connection, to close it on CloseIO.
    stdin: VsockConnection,
    stdin_fifo: Option<PathBuf>,
    /// Duplicates of the guest output connections, to end copies that outlive the grace.
    outputs: Vec<VsockConnection>,
    copies: Vec<JoinHandle<()>>,
    done: mpsc::Receiver<()>,
}

/// Copies until EOF on `from` or a failed write to `to`; returns the byte count. 32 KiB
/// at a time: a single larger guest write can stall a hybrid vsock stream (HOST.md).
fn copy<R: Read, W: Write>(mut from: R, mut to: W) -> u64 {
    let mut buf = vec![0u8; 32 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return total,
        };
        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            return total;
        }
        total += n as u64;
    }
}

fn open_output(id: &str, stream: &'static str, path: &Path) -> Result<File, StdioError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| StdioError::Fifo {
            id: id.to_string(),
            stream,
            path: path.to_path_buf(),
            source,
        })
}

/// Starts copying between the guest streams and the FIFOs.
pub fn attach(
    id: &str,
    streams: Streams,
    paths: &Paths,
    log: &Logger,
) -> Result<Attached, StdioError> {
    let clone = |conn: &VsockConnection, stream: &'static str| {
        conn.try_clone().map_err(|source| StdioError::Clone {
            id: id.to_string(),
            stream,
            source,
        })
    };
    // Open every FIFO before starting any copy, so that a bad path fails the request
    // with nothing left running.
    let mut outputs = vec![("stdout", streams.stdout, paths.stdout.as_str())];
    if let Some(stderr) = streams.stderr {
        outputs.push(("stderr", stderr, paths.stderr.as_str()));
    }
    let mut sinks = Vec::new();
    for (stream, conn, path) in outputs {
        let sink: Box<dyn Write + Send> = if path.is_empty() {
            // Read all the same: a guest writing into a stream no one reads would block.
            Box::new(std::io::sink())
        } else {
            Box::new(open_output(id, stream, Path::new(path))?)
        };
        sinks.push((stream, conn, sink));
    }
    let stdin_fifo = (!paths.stdin.is_empty()).then(|| PathBuf::from(&paths.stdin));
    let stdin_keep = clone(&streams.stdin, "stdin")?;
    let output_keep = sinks
        .iter()
        .map(|(stream, conn, _)| clone(conn, stream))
        .collect::<Result<Vec<_>, _>>()?;

    match &stdin_fifo {
        None => {
            // No stdin: the process reads end of file, as from /dev/null under runc.
            if let Err(e) = streams.stdin.shutdown_write() {
                debug!(log, "closing the guest stdin"; "container" => id, "error" => e.to_string());
            }
        }
        Some(path) => {
            let (path, mut conn, log, id) =
                (path.clone(), streams.stdin, log.clone(), id.to_string());
            // Not joined: it may wait in open() for a writer that never comes; CloseIO and
            // delete release it (see `release_stdin_open`).
            std::thread::spawn(move || {
                let n = match File::open(&path) {
                    Ok(fifo) => copy(fifo, &mut conn),
                    Err(e) => {
                        warn!(log, "opening the stdin FIFO"; "container" => &id,
                              "path" => path.display().to_string(), "error" => e.to_string());
                        0
                    }
                };
                if let Err(e) = conn.shutdown_write() {
                    debug!(log, "closing the guest stdin"; "container" => &id, "error" => e.to_string());
                }
                debug!(log, "stdin closed"; "container" => &id, "bytes" => n);
            });
        }
    }

    let (tx, done) = mpsc::channel();
    let mut copies = Vec::new();
    for (stream, conn, sink) in sinks {
        let (tx, log, id) = (tx.clone(), log.clone(), id.to_string());
        copies.push(std::thread::spawn(move || {
            let n = copy(conn, sink);
            debug!(log, "stream ended"; "container" => &id, "stream" => stream, "bytes" => n);
            let _ = tx.send(());
        }));
    }
    Ok(Attached {
        stdin: stdin_keep,
        stdin_fifo,
        outputs: output_keep,
        copies,
        done,
    })
}

/// Ends a stdin thread's wait in open(): a writer that comes and goes lets it through, and
/// with no writer left its first read is end of file.
fn release_stdin_open(path: &Path) {
    let _ = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

impl Attached {
    /// CloseIO: the process reads end of file on stdin.
    pub fn close_stdin(&self) {
        let _ = self.stdin.shutdown_write();
        if let Some(path) = &self.stdin_fifo {
            release_stdin_open(path);
        }
    }

    /// Waits for the output copies to end, at most `grace`; what is still open then is
    /// cut (a daemonized grandchild keeping the stream open must not hold the client's
    /// FIFO open forever). Once the copies have ended, the output FIFOs are closed, so a
    /// client reading them sees end of file before it hears of the exit.
    pub fn drain(mut self, grace: Duration, log: &Logger) {
        let deadline = std::time::Instant::now() + grace;
        let mut remaining = self.copies.len();
        while remaining > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.done.recv_timeout(left) {
                Ok(()) => remaining -= 1,
                Err(_) => break,
            }
        }
        if remaining > 0 {
            warn!(
                log,
                "output still open after the process exited; closing it"
            );
            for conn in &self.outputs {
                let _ = nix::sys::socket::shutdown(
                    std::os::fd::AsRawFd::as_raw_fd(conn),
                    nix::sys::socket::Shutdown::Both,
                );
            }
            // Not joined: a copy blocked writing into a FIFO that no one reads (the
            // client of `ctr run -d` is gone) stays blocked whatever we do here.
            self.copies.clear();
        }
        for copy in std::mem::take(&mut self.copies) {
            let _ = copy.join();
        }
        self.close_stdin();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_moves_every_byte_and_stops_at_eof() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        assert_eq!(copy(&data[..], &mut out), data.len() as u64);
        assert_eq!(out, data);
    }

    #[test]
    fn a_waiting_stdin_open_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stdin");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let path = fifo.clone();
        let reader = std::thread::spawn(move || {
            let mut file = File::open(&path).unwrap();
            let mut buf = Vec::new();
            file.read_to_end(&mut buf).unwrap();
            buf.len()
        });
        // The reader may not be in open() yet: retry until it has been let through.
        while !reader.is_finished() {
            release_stdin_open(&fifo);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(reader.join().unwrap(), 0);
    }
}
