//! PID 1's reaper: one thread collects the exit status of every child of the agent (its own
//! children and every orphan the kernel reparents to it) and hands each status to whoever
//! watches that PID.
//!
//! The agent is the only caller of `wait*()`: nothing else in it may wait for a child
//! (`std::process::Command::wait` would race with this thread), so code that needs a
//! child's status registers the PID here and blocks on the [`ExitCell`].
//!
//! The race between a child that exits and the code that learns its PID (a container's init
//! is forked by an intermediate process and its PID arrives over a pipe, possibly after it
//! has died): statuses nobody watches are kept as "unclaimed" while some code has announced
//! that it is about to watch new PIDs ([`Reaper::expect`]). `watch` takes an unclaimed
//! status if there is one. When no expectation is open the unclaimed statuses are dropped:
//! they belong to orphans nobody will ever ask about, and keeping them would let a recycled
//! PID pick up a stale status.
//!
//! SIGCHLD must be blocked in every thread (main does it before starting any): the reaper
//! thread takes it synchronously with `sigwait`, then drains with `waitpid(-1, WNOHANG)`.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use slog::{debug, error, Logger};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl ExitStatus {
    /// Decodes a raw `wait()` status; `None` for stop/continue reports.
    pub fn from_raw(status: libc::c_int) -> Option<ExitStatus> {
        if libc::WIFEXITED(status) {
            Some(ExitStatus::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ExitStatus::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }

    /// Shell convention: the exit code, or 128 + the signal.
    pub fn shell_status(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
        }
    }

    /// The terminating signal, 0 for a normal exit.
    pub fn signal(self) -> i32 {
        match self {
            ExitStatus::Exited(_) => 0,
            ExitStatus::Signaled(signal) => signal,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit status {code}"),
            ExitStatus::Signaled(signal) => {
                match Signal::try_from(*signal) {
                    Ok(sig) => write!(f, "killed by {sig}")?,
                    Err(_) => write!(f, "killed by signal {signal}")?,
                }
                Ok(())
            }
        }
    }
}

/// Where one process's exit status lands; waiters block on it.
#[derive(Debug, Default)]
pub struct ExitCell {
    status: Mutex<Option<ExitStatus>>,
    cond: Condvar,
}

impl ExitCell {
    fn lock(&self) -> MutexGuard<'_, Option<ExitStatus>> {
        // A panic while holding this lock cannot leave the Option half-written.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, status: ExitStatus) {
        *self.lock() = Some(status);
        self.cond.notify_all();
    }

    /// The status if the process has exited.
    pub fn get(&self) -> Option<ExitStatus> {
        *self.lock()
    }

    /// Blocks until the process has exited.
    pub fn wait(&self) -> ExitStatus {
        let mut guard = self.lock();
        loop {
            if let Some(status) = *guard {
                return status;
            }
            guard = self.cond.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until the process has exited or `timeout` has passed.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock();
        loop {
            if let Some(status) = *guard {
                return Some(status);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = self
                .cond
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The bookkeeping, kept apart from the thread so that it can be tested without children.
#[derive(Default)]
struct Table {
    watched: HashMap<i32, Arc<ExitCell>>,
    unclaimed: HashMap<i32, ExitStatus>,
    expecting: usize,
}

impl Table {
    /// Records a reaped child; false when nobody wanted it.
    fn record(&mut self, pid: i32, status: ExitStatus) -> bool {
        if let Some(cell) = self.watched.remove(&pid) {
            cell.set(status);
            true
        } else {
            if self.expecting > 0 {
                self.unclaimed.insert(pid, status);
            }
            false
        }
    }

    fn watch(&mut self, pid: i32) -> Arc<ExitCell> {
        let cell = Arc::new(ExitCell::default());
        match self.unclaimed.remove(&pid) {
            Some(status) => cell.set(status),
            None => {
                self.watched.insert(pid, cell.clone());
            }
        }
        cell
    }

    fn end_expectation(&mut self) {
        self.expecting = self.expecting.saturating_sub(1);
        if self.expecting == 0 {
            self.unclaimed.clear();
        }
    }
}

pub struct Reaper {
    table: Mutex<Table>,
}

/// An open announcement that PIDs will be watched soon; see the module comment.
pub struct Expectation<'a> {
    reaper: &'a Reaper,
}

impl Expectation<'_> {
    /// Starts watching `pid`, whose status may already have been collected.
    pub fn watch(&self, pid: i32) -> Arc<ExitCell> {
        self.reaper.table().watch(pid)
    }
}

impl Drop for Expectation<'_> {
    fn drop(&mut self) {
        self.reaper.table().end_expectation();
    }
}

impl Reaper {
    /// Starts the reaper thread. SIGCHLD must already be blocked (see the module comment).
    pub fn start(log: Logger) -> std::io::Result<Arc<Reaper>> {
        let reaper = Arc::new(Reaper {
            table: Mutex::new(Table::default()),
        });
        let me = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || me.run(log))?;
        Ok(reaper)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // Every update of the table is a single insert or remove: a panic elsewhere cannot
        // leave it inconsistent, so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Call before forking a child whose PID will be learnt later; keep the result until
    /// every such PID is watched.
    pub fn expect(&self) -> Expectation<'_> {
        self.table().expecting += 1;
        Expectation { reaper: self }
    }

    fn run(&self, log: Logger) {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        loop {
            if let Err(e) = set.wait() {
                error!(log, "sigwait for SIGCHLD failed"; "error" => e.to_string());
                std::thread::sleep(Duration::from_millis(100));
            }
            self.drain(&log);
        }
    }

    /// Collects every child that has exited.
    fn drain(&self, log: &Logger) {
        loop {
            let mut raw: libc::c_int = 0;
            // SAFETY: waitpid only writes the status integer we pass.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG | libc::__WALL) };
            if pid == 0 {
                return; // children remain, none has exited
            }
            if pid < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => return,
                    _ => {
                        error!(log, "waitpid failed"; "error" => err.to_string());
                        return;
                    }
                }
            }
            let Some(status) = ExitStatus::from_raw(raw) else {
                continue;
            };
            let claimed = self.table().record(pid, status);
            debug!(log, "reaped"; "pid" => pid, "status" => status.to_string(), "watched" => claimed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_reach_their_watchers() {
        let mut table = Table::default();
        let cell = table.watch(10);
        assert_eq!(cell.get(), None);
        assert!(table.record(10, ExitStatus::Exited(3)));
        assert_eq!(cell.get(), Some(ExitStatus::Exited(3)));
        assert_eq!(cell.wait(), ExitStatus::Exited(3));
        assert!(table.watched.is_empty());
    }

    #[test]
    fn early_exits_are_kept_only_while_expected() {
        let mut table = Table::default();
        // An orphan nobody expects: dropped.
        assert!(!table.record(5, ExitStatus::Exited(0)));
        assert!(table.unclaimed.is_empty());
        // A child that dies before its PID is known: kept for the watcher.
        table.expecting += 1;
        assert!(!table.record(6, ExitStatus::Signaled(9)));
        let cell = table.watch(6);
        assert_eq!(cell.get(), Some(ExitStatus::Signaled(9)));
        // Leftovers go when the expectation ends.
        table.record(7, ExitStatus::Exited(1));
        table.end_expectation();
        assert!(table.unclaimed.is_empty());
        assert_eq!(table.watch(7).get(), None);
    }

    #[test]
    fn shell_status_follows_the_convention() {
        assert_eq!(ExitStatus::Exited(3).shell_status(), 3);
        assert_eq!(ExitStatus::Signaled(15).shell_status(), 143);
        assert_eq!(ExitStatus::Signaled(15).signal(), 15);
        assert_eq!(ExitStatus::Exited(0).signal(), 0);
        assert_eq!(ExitStatus::Signaled(9).to_string(), "killed by SIGKILL");
        assert_eq!(ExitStatus::from_raw(3 << 8), Some(ExitStatus::Exited(3)));
        assert_eq!(ExitStatus::from_raw(15), Some(ExitStatus::Signaled(15)));
    }

    #[test]
    fn wait_timeout_gives_up() {
        let cell = ExitCell::default();
        assert_eq!(cell.wait_timeout(Duration::from_millis(10)), None);
        cell.set(ExitStatus::Exited(0));
        assert_eq!(
            cell.wait_timeout(Duration::from_millis(10)),
            Some(ExitStatus::Exited(0))
        );
    }
}
