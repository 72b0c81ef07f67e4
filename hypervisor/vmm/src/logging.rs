//! ward-vmm's log: slog lines on stderr, which ward keeps as the VM's `vmm.log`.
//!
//! Timestamps are UTC. A local-time stamp has chrono look at /etc/localtime (a stat every
//! second or so, per thread, and a read when it changed) from whichever thread logs, and
//! the seccomp filters of the vCPU and device threads rightly forbid file access: in L1,
//! a vCPU thread's log line ended ward-vmm with `statx` under the vCPU filter, which the
//! runtime only saw as a dropped agent connection.

use std::io::Write;

use slog::{o, Drain, Level, Logger};

/// The level named by `--log-level`; anything unknown is `info`.
pub fn level(name: &str) -> Level {
    match name {
        "error" => Level::Error,
        "warning" | "warn" => Level::Warning,
        "debug" => Level::Debug,
        "trace" => Level::Trace,
        _ => Level::Info,
    }
}

/// A logger writing lines of `level` and above to `out`.
pub fn logger<W: Write + Send + 'static>(level: Level, out: W) -> Logger {
    let decorator = slog_term::PlainSyncDecorator::new(out);
    let drain = slog_term::FullFormat::new(decorator)
        .use_utc_timestamp()
        .build()
        .fuse();
    let drain = slog::LevelFilter::new(drain, level).fuse();
    Logger::root(drain, o!("pid" => std::process::id()))
}
