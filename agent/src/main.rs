//! `ward-agent`: PID 1 (`/init`) of ward's guest initramfs. It sets the guest up, reaps
//! every process, and serves the host: the ttrpc `Agent` service on vsock port 1024 and
//! the stdio streams of container processes on vsock port 1025.
//!
//! Layout:
//! - `init`: PID-1 duties (mounts, cgroups, hostname, power-off on fatal errors);
//! - `options`, `logging`: kernel command line and the console log;
//! - `reaper`: the only place exit statuses are collected;
//! - `server`: the RPCs; `stream`: stdio connections; `sysinfo`: GetGuestDetails;
//! - `process`: a started process and its pipes; `netdev`: loopback up;
//! - `container`: the registry and everything about building and running containers;
//! - `error`: how module errors become ttrpc statuses.

use ward_agent::{container, init, logging, options, server, stream};

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use slog::{info, o, warn, Logger};

use ward_agent::container::Containers;
use ward_agent::reaper::Reaper;

fn main() {
    // Before any thread exists, so that every thread inherits it: SIGCHLD is only ever
    // taken by the reaper's sigwait.
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let masked = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&chld), None);

    let pid1 = std::process::id() == 1;
    let early_problems = if pid1 { init::early() } else { Vec::new() };

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (options, option_problems) = options::parse_cmdline(&cmdline);
    let log = logging::logger(&options, console(pid1));
    install_panic_hook(log.clone());

    info!(log, "ward-agent starting"; "version" => ward_agent_protocol::AGENT_VERSION,
          "protocol" => ward_agent_protocol::PROTOCOL_VERSION, "pid1" => pid1,
          "uptime_s" => uptime());
    if let Err(e) = masked {
        init::fatal(&log, "blocking SIGCHLD", e.desc());
    }
    for problem in early_problems.iter().chain(&option_problems) {
        warn!(log, "boot problem"; "problem" => problem);
    }
    if pid1 {
        init::late(&options, &log);
    }
    // Outside PID 1 (a debugging setup), orphans must still come to us to be reaped.
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer argument.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };

    let reaper = match Reaper::start(log.new(o!("part" => "reaper"))) {
        Ok(reaper) => reaper,
        Err(e) => init::fatal(&log, "starting the reaper", &e.to_string()),
    };
    let containers = Arc::new(Containers::new(reaper, log.clone()));

    let listener = match stream::listen() {
        Ok(listener) => listener,
        Err(e) => init::fatal(&log, "listening on the stream port", &e.to_string()),
    };
    let stream_log = log.new(o!("part" => "stream"));
    let source: Arc<dyn stream::StreamSource> = containers.clone();
    let spawned = std::thread::Builder::new()
        .name("stream-accept".into())
        .spawn(move || stream::accept_loop(listener, source, stream_log));
    if let Err(e) = spawned {
        init::fatal(&log, "starting the stream listener", &e.to_string());
    }

    // Kept for ever: dropping the server would stop it.
    let _server = match server::serve(server::Service::new(containers, log.clone())) {
        Ok(server) => server,
        Err(e) => init::fatal(&log, "starting the ttrpc server", &e.to_string()),
    };
    info!(log, "agent ready"; "ttrpc_port" => ward_agent_protocol::AGENT_VSOCK_PORT,
          "stream_port" => ward_agent_protocol::STREAM_VSOCK_PORT, "uptime_s" => uptime());
    loop {
        std::thread::park();
    }
}

/// Where the log goes: the console for PID 1 (the kernel's fds 0-2 may be missing if the
/// initramfs has no /dev/console), stderr otherwise.
fn console(pid1: bool) -> Box<dyn Write + Send> {
    if pid1 {
        let console = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open("/dev/console");
        if let Ok(console) = console {
            return Box::new(console);
        }
    }
    Box::new(std::io::stderr())
}

/// Seconds since boot, for boot-time measurements in the log.
fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

/// A panic in the agent is logged and, in PID 1, powers the guest off cleanly (release
/// builds abort on panic, and PID 1 aborting panics the kernel). In a forked child the
/// logger must not be used: the child reports the panic over its report pipe instead.
fn install_panic_hook(log: Logger) {
    let agent_pid = std::process::id();
    std::panic::set_hook(Box::new(move |info| {
        if std::process::id() != agent_pid {
            container::spawn::report_panic(&info.to_string());
            return;
        }
        slog::crit!(log, "panic"; "info" => info.to_string());
        if agent_pid == 1 {
            init::power_off();
        }
    }));
}
