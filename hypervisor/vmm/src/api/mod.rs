//! The control socket: a Unix socket where each line is a JSON request and each request
//! gets one JSON reply line. Connections are served by a thread each; requests go to the
//! main loop, which owns the VM, through a channel plus an eventfd that wakes its epoll.

pub mod protocol;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use slog::{debug, warn, Logger};
use vmm_sys_util::eventfd::EventFd;

pub use protocol::{Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the API socket {path}: {source}")]
    Bind {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the API eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    #[error("starting the API thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error(transparent)]
    Seccomp(crate::seccomp::Error),
}

/// The longest request line accepted.
const MAX_LINE: u64 = 64 * 1024;

/// One request and where its reply goes.
pub struct Call {
    pub request: Request,
    pub reply: Sender<Reply>,
}

/// The main loop's end: `wake` becomes readable when calls are queued.
pub struct ApiServer {
    path: PathBuf,
    pub calls: Receiver<Call>,
    pub wake: Arc<EventFd>,
}

impl ApiServer {
    /// Binds `path` (replacing a stale socket) and starts accepting.
    pub fn start(path: &Path, log: Logger) -> Result<Self, Error> {
        let bind_err = |source| Error::Bind {
            path: path.display().to_string(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if meta.file_type().is_socket() {
                std::fs::remove_file(path).map_err(bind_err)?;
            }
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd)?);
        let (tx, rx) = mpsc::channel();
        let thread_wake = wake.clone();
        // The thread confines itself before it accepts anything, and says whether it could.
        let (confined_tx, confined_rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                let confined = crate::seccomp::enter(crate::seccomp::ThreadClass::Api);
                let ok = confined.is_ok();
                let _ = confined_tx.send(confined);
                if ok {
                    accept_loop(listener, tx, thread_wake, log)
                }
            })
            .map_err(Error::Spawn)?;
        match confined_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::Seccomp(e)),
            Err(_) => return Err(Error::Seccomp(crate::seccomp::Error::ThreadGone)),
        }
        Ok(ApiServer {
            path: path.to_path_buf(),
            calls: rx,
            wake,
        })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: UnixListener, tx: Sender<Call>, wake: Arc<EventFd>, log: Logger) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let (tx, wake, conn_log) = (tx.clone(), wake.clone(), log.clone());
                let spawned = std::thread::Builder::new()
                    .name("api-conn".into())
                    .spawn(move || serve(stream, tx, wake, conn_log));
                if let Err(e) = spawned {
                    warn!(log, "cannot serve an API connection"; "error" => %e);
                }
            }
            Err(e) => warn!(log, "accepting an API connection"; "error" => %e),
        }
    }
}

fn serve(stream: UnixStream, tx: Sender<Call>, wake: Arc<EventFd>, log: Logger) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match (&mut reader).take(MAX_LINE).read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE {
            let _ = writer.write_all(
                Reply::Err("request line too long".into())
                    .to_line()
                    .as_bytes(),
            );
            return;
        }
        if line.trim().is_empty() {
            continue;
        }
        let reply = match protocol::parse(&line) {
            Ok(request) => {
                debug!(log, "API request"; "request" => format!("{request:?}"));
                let (rtx, rrx) = mpsc::channel();
                if tx
                    .send(Call {
                        request,
                        reply: rtx,
                    })
                    .is_err()
                    || wake.write(1).is_err()
                {
                    Reply::Err("the VMM is stopping".into())
                } else {
                    rrx.recv()
                        .unwrap_or_else(|_| Reply::Err("the VMM is stopping".into()))
                }
            }
            Err(e) => Reply::Err(e),
        };
        if writer.write_all(reply.to_line().as_bytes()).is_err() {
            return;
        }
    }
}
