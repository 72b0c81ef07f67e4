//! `ward relay ID` (hidden): started by `ward create`, it stands for the container's init
//! process on the host (see `crate::relay`). It tells `create` on the READY_FD pipe that it
//! is attached (or why not), then lives until the guest process exits and exits likewise.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use clap::Args;
use slog::{error, info};

use crate::cli::CliError;
use crate::container::{lifecycle, Context, LifecycleError};
use crate::relay::{self, terminal, Streams};
use crate::sandbox::Sandbox;

/// The descriptor `create` hands the relay for its ready message.
pub const READY_FD: i32 = 3;
/// Set by `create`, so that a person running `ward relay` by hand gets no surprise write.
pub const READY_FD_ENV: &str = "WARD_RELAY_READY_FD";

#[derive(Debug, Args)]
pub struct Relay {
    /// Relay this exec process rather than the container's init.
    #[arg(long)]
    pub exec_id: Option<String>,
    /// Our stdio is the process's terminal (a pty slave whose master the engine holds).
    #[arg(long)]
    pub tty: bool,
    pub container_id: String,
}

fn ready_pipe() -> Option<std::fs::File> {
    let fd: i32 = std::env::var(READY_FD_ENV).ok()?.parse().ok()?;
    std::env::remove_var(READY_FD_ENV);
    // SAFETY: `create` dup2'ed the write end of its pipe to this descriptor for us and
    // nothing else in this process owns it.
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}

pub fn execute(ctx: &Context, args: &Relay) -> Result<i32, CliError> {
    crate::cli::block_signals()?;
    let mut ready = ready_pipe();
    let id = &args.container_id;
    let exec_id = args.exec_id.as_deref().unwrap_or("");
    // Kept for the relay's life: leaving raw mode would reintroduce echo and newline
    // translation on the host side.
    let mut raw_mode = None;
    let attached = (|| -> Result<_, LifecycleError> {
        if args.tty {
            let terminal_err = |source| LifecycleError::Terminal {
                id: id.clone(),
                source,
            };
            terminal::take_controlling(terminal::stdin()).map_err(terminal_err)?;
            raw_mode = Some(terminal::RawMode::enter(terminal::stdin()).map_err(terminal_err)?);
        }
        let state = ctx.store.load(id)?;
        let vm = state.vm.ok_or_else(|| LifecycleError::Relay {
            id: id.clone(),
            message: "the container has no VM".into(),
        })?;
        let sandbox_err = lifecycle::sandbox_err(id);
        let sandbox = Sandbox::attach(&ctx.config, vm).map_err(&sandbox_err)?;
        let streams = Streams::open(&sandbox, id, exec_id, args.tty).map_err(&sandbox_err)?;
        let agent = sandbox.agent().map_err(&sandbox_err)?;
        Ok((streams, agent))
    })();
    let (streams, agent) = match attached {
        Ok(parts) => {
            if let Some(mut pipe) = ready.take() {
                let _ = pipe.write_all(b"ok");
            }
            parts
        }
        Err(e) => {
            if let Some(mut pipe) = ready.take() {
                let _ = pipe.write_all(e.to_string().as_bytes());
            }
            return Err(e.into());
        }
    };
    let status = match relay::serve(Arc::new(agent), id, exec_id, streams, args.tty, &ctx.log) {
        Ok(status) => status,
        Err(e) => {
            error!(ctx.log, "relay lost its process"; "container" => id.as_str(), "error" => e.to_string());
            return Err(CliError::Lifecycle(LifecycleError::Relay {
                id: id.clone(),
                message: e.to_string(),
            }));
        }
    };
    drop(raw_mode);
    info!(ctx.log, "process exited"; "container" => id.as_str(), "exec" => exec_id, "status" => status);
    // An exec's exit is its own, not the container's.
    if exec_id.is_empty() {
        lifecycle::record_exit(ctx, id, status)?;
    }
    Ok(status)
}
