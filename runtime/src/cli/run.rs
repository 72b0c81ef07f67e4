//! `ward run [--bundle B] [--detach] ID`: create and start. In the foreground `run` is the
//! relay itself (stdio attached, signals forwarded, the guest's exit status is ours) and
//! deletes the container when its process has exited, as runc does.

use std::sync::Arc;

use slog::{info, warn};

use crate::cli::CliError;
use crate::container::lifecycle::{self, Prepared};
use crate::container::{Context, LifecycleError, Status};
use crate::hooks::Stage;
use crate::relay::{self, Streams};

pub fn execute(ctx: &Context, args: &liboci_cli::Run) -> Result<i32, CliError> {
    crate::cli::refuse_preserved_fds(args.preserve_fds)?;
    let id = args.container_id.as_str();
    if args.detach {
        lifecycle::create(
            ctx,
            &args.bundle,
            id,
            args.pid_file.as_deref(),
            args.console_socket.as_deref(),
        )?;
        lifecycle::start(ctx, id)?;
        return Ok(0);
    }
    // Before any thread exists, so that every thread inherits the mask.
    crate::cli::block_signals()?;
    let started = std::time::Instant::now();
    let console = lifecycle::Console {
        detach: false,
        socket: args.console_socket.as_deref(),
    };
    let Prepared {
        lock,
        mut state,
        sandbox,
        agent,
        terminal,
        ..
    } = lifecycle::prepare(ctx, &args.bundle, id, console)?;

    let mut lock = Some(lock);
    let result = (|| -> Result<i32, LifecycleError> {
        let sandbox_err = lifecycle::sandbox_err(id);
        let streams = Streams::open(&sandbox, id, "", terminal).map_err(sandbox_err)?;
        state.relay = ward_hypervisor::ProcessRecord::of("relay", std::process::id() as i32);
        lifecycle::run_create_hooks(&state)?;
        state.status = Status::Created;
        if let Some(lock) = &lock {
            ctx.store.save(lock, &state)?;
        }
        lifecycle::write_pid_file(id, args.pid_file.as_deref(), std::process::id() as i32)?;
        agent
            .start_container(id)
            .map_err(|source| LifecycleError::Agent {
                id: id.to_string(),
                source,
            })?;
        state.status = Status::Running;
        if let Some(lock) = lock.take() {
            ctx.store.save(&lock, &state)?;
        }
        lifecycle::run_late_hooks(ctx, Stage::Poststart, &state);
        // Unlocked while the process runs, so that `delete --force` and friends can act.
        info!(ctx.log, "container running"; "container" => id,
              "since_run_ms" => started.elapsed().as_millis() as u64);
        let _raw =
            relay::terminal::raw_stdin(terminal).map_err(|source| LifecycleError::Terminal {
                id: id.to_string(),
                source,
            })?;
        relay::serve(Arc::new(agent), id, "", streams, terminal, &ctx.log).map_err(|e| {
            LifecycleError::Relay {
                id: id.to_string(),
                message: e.to_string(),
            }
        })
    })();

    drop(sandbox);
    lifecycle::teardown(ctx, &state);
    let lock = match lock {
        Some(lock) => Ok(lock),
        None => ctx.store.lock(id),
    };
    match lock {
        Ok(lock) => {
            if let Err(e) = ctx.store.remove(lock, id) {
                warn!(ctx.log, "removing the container's state"; "error" => e.to_string());
            }
        }
        // Someone deleted it while it ran: nothing left to remove.
        Err(crate::container::StoreError::NotFound(_)) => {}
        Err(e) => warn!(ctx.log, "locking the container for removal"; "error" => e.to_string()),
    }
    // The container is gone, as after `delete`; a create that failed before its hooks
    // never existed for them.
    let hook_failed = matches!(result, Err(LifecycleError::Hook { .. }));
    if hook_failed || !matches!(state.status, Status::Creating) {
        lifecycle::run_late_hooks(ctx, Stage::Poststop, &state);
    }
    Ok(result?)
}
