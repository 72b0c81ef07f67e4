//! `ward exec [--process FILE] [--detach] [--pid-file F] [--cwd D] [--env K=V] [--user U[:G]]
//! ID [ARGS...]`: a further process in a running container. In the foreground `exec` is the
//! process's relay (stdio, signals, exit status); with --detach a relay is started for it.

use std::path::Path;
use std::sync::Arc;

use oci_spec::runtime::{Process, Spec};

use crate::cli::CliError;
use crate::container::{lifecycle, Context, LifecycleError};
use crate::relay::{self, Streams};

/// The process to run: --process FILE as it is, or the container's own process with the
/// command line and the flags applied (runc's behaviour).
fn process(ctx: &Context, args: &liboci_cli::Exec) -> Result<Process, CliError> {
    if let Some(path) = &args.process {
        let mut process = read_process(path)?;
        if args.tty {
            process.set_terminal(Some(true));
        }
        return Ok(process);
    }
    if args.command.is_empty() {
        return Err(CliError::Usage(
            "exec needs a command, or --process FILE".into(),
        ));
    }
    let state = ctx.store.load(&args.container_id)?;
    let config = state.bundle.join("config.json");
    let text = std::fs::read(&config).map_err(|source| CliError::Io {
        what: format!("reading {}", config.display()),
        source,
    })?;
    let spec: Spec = serde_json::from_slice(&text).map_err(|e| CliError::Io {
        what: format!("parsing {}", config.display()),
        source: e.into(),
    })?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(args.tty));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    if !args.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        for (key, value) in &args.env {
            let prefix = format!("{key}=");
            env.retain(|e| !e.starts_with(&prefix));
            env.push(format!("{key}={value}"));
        }
        process.set_env(Some(env));
    }
    if let Some((uid, gid)) = args.user {
        let mut user = process.user().clone();
        user.set_uid(uid);
        if let Some(gid) = gid {
            user.set_gid(gid);
        }
        process.set_user(user);
    }
    if !args.additional_gids.is_empty() {
        let mut user = process.user().clone();
        user.set_additional_gids(Some(args.additional_gids.clone()));
        process.set_user(user);
    }
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    Ok(process)
}

fn read_process(path: &Path) -> Result<Process, CliError> {
    let text = std::fs::read(path).map_err(|source| CliError::Io {
        what: format!("reading process file {}", path.display()),
        source,
    })?;
    let process: Process = serde_json::from_slice(&text)
        .map_err(|e| CliError::Usage(format!("malformed process file {}: {e}", path.display())))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(CliError::Usage(format!(
            "{}: args must not be empty",
            path.display()
        )));
    }
    Ok(process)
}

pub fn execute(ctx: &Context, args: &liboci_cli::Exec) -> Result<i32, CliError> {
    crate::cli::refuse_preserved_fds(args.preserve_fds)?;
    let id = args.container_id.as_str();
    let process = process(ctx, args)?;
    let terminal = process.terminal().unwrap_or(false);
    let console_socket = args.console_socket.as_deref();
    lifecycle::Console {
        detach: args.detach,
        socket: console_socket,
    }
    .check(id, terminal)?;
    let process_json = serde_json::to_vec(&process).map_err(|e| CliError::Io {
        what: "serializing the process".into(),
        source: e.into(),
    })?;
    if !args.detach {
        // Before any thread exists, so that every thread inherits the mask.
        crate::cli::block_signals()?;
    }
    let (exec_id, sandbox, agent) = lifecycle::exec(ctx, id, process_json)?;
    let pid_file = |pid| lifecycle::write_pid_file(id, args.pid_file.as_deref(), pid);
    if args.detach {
        drop(agent);
        let relay = lifecycle::spawn_relay(ctx, id, Some(&exec_id), console_socket)?;
        pid_file(relay.pid)?;
        lifecycle::record_exec_relay(ctx, id, relay)?;
        return Ok(0);
    }
    let streams =
        Streams::open(&sandbox, id, &exec_id, terminal).map_err(lifecycle::sandbox_err(id))?;
    pid_file(std::process::id() as i32)?;
    let _raw = relay::terminal::raw_stdin(terminal).map_err(|source| LifecycleError::Terminal {
        id: id.to_string(),
        source,
    })?;
    let status =
        relay::serve(Arc::new(agent), id, &exec_id, streams, terminal, &ctx.log).map_err(|e| {
            LifecycleError::Relay {
                id: id.to_string(),
                message: e.to_string(),
            }
        })?;
    Ok(status)
}
