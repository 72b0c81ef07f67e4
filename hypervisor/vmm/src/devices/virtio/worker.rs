//! The thread that runs a device: an epoll loop over queue EventFds, backend fds and a kill
//! EventFd that `reset` uses to stop it.

use std::io;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::ActivateError;

/// Token reserved for the kill EventFd; handlers use any other value.
const KILL_TOKEN: u64 = u64::MAX;
const EVENTS_PER_WAIT: usize = 32;

/// Why a worker stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("epoll_wait failed: {0}")]
    Wait(#[source] io::Error),
    #[error("device failed: {0}")]
    Device(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("device worker panicked")]
    Panicked,
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::Error),
}

/// The epoll set a handler adds its fds to.
pub struct Poller {
    epoll: Epoll,
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epoll: Epoll::new()?,
        })
    }

    pub fn add(&self, fd: &impl AsRawFd, token: u64, events: EventSet) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Add,
            fd.as_raw_fd(),
            EpollEvent::new(events, token),
        )
    }

    pub fn remove(&self, fd: &impl AsRawFd) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Delete,
            fd.as_raw_fd(),
            EpollEvent::default(),
        )
    }
}

/// A device's event loop body.
pub trait EventHandler: Send + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Adds the handler's initial fds (queue EventFds, listeners).
    fn register(&mut self, poller: &Poller) -> io::Result<()>;
    /// Handles one ready fd; an error stops the worker.
    fn handle_event(
        &mut self,
        poller: &Poller,
        token: u64,
        events: EventSet,
    ) -> Result<(), Self::Error>;
    /// Runs after each batch of events (and on timeouts): flush deferred work here.
    fn after_events(&mut self, _poller: &Poller) -> Result<(), Self::Error> {
        Ok(())
    }
    /// epoll_wait timeout in milliseconds for the next wait; -1 waits forever.
    fn timeout_ms(&self) -> i32 {
        -1
    }
}

/// A running worker thread; dropping it stops the thread.
pub struct Worker {
    kill: EventFd,
    thread: Option<JoinHandle<Result<(), WorkerError>>>,
}

impl Worker {
    pub fn spawn<H: EventHandler>(name: &str, mut handler: H) -> Result<Self, ActivateError> {
        let kill = EventFd::new(libc::EFD_NONBLOCK).map_err(ActivateError::Epoll)?;
        let poller = Poller::new().map_err(ActivateError::Epoll)?;
        poller
            .add(&kill, KILL_TOKEN, EventSet::IN)
            .map_err(ActivateError::Epoll)?;
        handler.register(&poller).map_err(ActivateError::Epoll)?;
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(poller, handler))
            .map_err(ActivateError::Spawn)?;
        let kill_clone = kill.try_clone().map_err(ActivateError::Epoll)?;
        drop(kill);
        Ok(Self {
            kill: kill_clone,
            thread: Some(thread),
        })
    }

    /// Stops the thread and returns why it had stopped on its own, if it had.
    pub fn stop(mut self) -> Result<(), WorkerError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), WorkerError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        // The thread may already be gone after an error, in which case the write is moot.
        let _ = self.kill.write(1);
        thread.join().map_err(|_| WorkerError::Panicked)?
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

fn run<H: EventHandler>(poller: Poller, mut handler: H) -> Result<(), WorkerError> {
    // Before the first guest request is read.
    crate::seccomp::enter(crate::seccomp::ThreadClass::Worker).map_err(WorkerError::Seccomp)?;
    loop {
        let timeout = handler.timeout_ms();
        if !step(&poller, &mut handler, timeout)? {
            return Ok(());
        }
    }
}

/// Waits once and dispatches what is ready; false when the kill EventFd fired.
pub fn step<H: EventHandler>(
    poller: &Poller,
    handler: &mut H,
    timeout_ms: i32,
) -> Result<bool, WorkerError> {
    let mut events = [EpollEvent::default(); EVENTS_PER_WAIT];
    let n = match poller.epoll.wait(timeout_ms, &mut events) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
        Err(e) => return Err(WorkerError::Wait(e)),
    };
    for ev in &events[..n] {
        if ev.data() == KILL_TOKEN {
            return Ok(false);
        }
        handler
            .handle_event(poller, ev.data(), ev.event_set())
            .map_err(|e| WorkerError::Device(Box::new(e)))?;
    }
    handler
        .after_events(poller)
        .map_err(|e| WorkerError::Device(Box::new(e)))?;
    Ok(true)
}
