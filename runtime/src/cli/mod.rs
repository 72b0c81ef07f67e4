//! The command line: runc's contract (flags from liboci-cli where its types fit), one file
//! per command. Commands parse and call `container::lifecycle`; they hold no logic of
//! their own beyond printing.

pub mod check;
pub mod create;
pub mod delete;
pub mod env;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod relay;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::container::{Context, LifecycleError, Store};
use crate::logging::{self, LogError};

pub const DEFAULT_ROOT: &str = "/run/ward";

#[derive(Debug, Parser)]
#[command(
    name = "ward",
    about = "Runs OCI containers, each inside its own microVM",
    disable_version_flag = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Print the version (as `runc --version` does, for tools that parse it)
    #[arg(short = 'v', long = "version")]
    pub version: bool,
    #[command(flatten)]
    pub global: liboci_cli::GlobalOpts,
    /// ward's configuration file (else $WARD_CONFIG, else /etc/ward/configuration.toml).
    /// Engines that pass no environment to their runtime reach it this way, e.g.
    /// `podman --runtime-flag config=FILE`.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container: boot its microVM and prepare its process
    Create(liboci_cli::Create),
    /// Run the user's process of a created container
    Start(liboci_cli::Start),
    /// Print the state of a container (OCI state JSON)
    State(liboci_cli::State),
    /// Send a signal to the container's init process (default SIGTERM)
    Kill(kill::Kill),
    /// Delete a container and its microVM
    Delete(liboci_cli::Delete),
    /// Freeze every process of the container
    Pause(liboci_cli::Pause),
    /// Thaw a paused container
    Resume(liboci_cli::Resume),
    /// List the container's processes (guest PIDs)
    Ps(liboci_cli::Ps),
    /// Apply new CPU, memory and pids limits to a container
    Update(liboci_cli::Update),
    /// Print the container's resource statistics as runc's events
    Events(liboci_cli::Events),
    /// List the containers under --root
    List(liboci_cli::List),
    /// Write a starting config.json into a bundle
    Spec(liboci_cli::Spec),
    /// Print what this runtime supports (OCI features JSON)
    Features(liboci_cli::Features),
    /// Run a further process in a running container
    Exec(liboci_cli::Exec),
    /// Create and start a container, in the foreground unless --detach
    Run(liboci_cli::Run),
    /// Diagnose this host: what ward needs, what it will use, what to fix
    Check(check::Check),
    /// Print the resolved configuration, where it was read from, and the guest assets
    Env(env::Env),
    /// Print the version
    Version,
    /// (internal) the host process standing for a container's init process
    #[command(hide = true)]
    Relay(relay::Relay),
}

#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::container::StoreError> for CliError {
    fn from(e: crate::container::StoreError) -> Self {
        CliError::Lifecycle(e.into())
    }
}

/// Blocks the signals a relay forwards; called before any thread exists, so that every
/// thread inherits the mask.
pub fn block_signals() -> Result<(), CliError> {
    crate::relay::signals::block().map_err(|source| CliError::Io {
        what: "starting the relay".into(),
        source,
    })
}

/// `--preserve-fds N`: descriptors cannot cross into a VM, so a request for any is
/// refused rather than silently dropped.
pub fn refuse_preserved_fds(count: i32) -> Result<(), CliError> {
    if count > 0 {
        return Err(CliError::Usage(format!(
            "--preserve-fds {count}: ward cannot pass host file descriptors into the container's VM"
        )));
    }
    Ok(())
}

/// Builds the shared context from the global flags.
pub fn context(
    global: &liboci_cli::GlobalOpts,
    config_path: Option<&std::path::Path>,
) -> Result<Context, CliError> {
    let config = Config::load(config_path)?;
    let level = if global.debug {
        slog::Level::Debug
    } else {
        match (&config.log.level, &global.log) {
            (Some(level), _) => logging::parse_level(level)?,
            (None, Some(_)) => slog::Level::Info,
            (None, None) => slog::Level::Warning,
        }
    };
    let log = logging::build(global.log.as_deref(), global.log_format.as_deref(), level)?;
    let root = global
        .root
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    // The relay runs from another working directory's point of view: give it absolute paths.
    let absolute =
        |p: &PathBuf| -> PathBuf { std::path::absolute(p).unwrap_or_else(|_| p.clone()) };
    let root = absolute(&root);
    let mut relay_flags = vec!["--root".to_string(), root.display().to_string()];
    if let Some(path) = &global.log {
        relay_flags.push("--log".into());
        relay_flags.push(absolute(path).display().to_string());
    }
    if let Some(format) = &global.log_format {
        relay_flags.push("--log-format".into());
        relay_flags.push(format.clone());
    }
    if global.debug {
        relay_flags.push("--debug".into());
    }
    if let Some(path) = &config.source {
        relay_flags.push("--config".into());
        relay_flags.push(absolute(path).display().to_string());
    }
    Ok(Context {
        store: Store::new(root),
        config,
        log,
        relay_flags,
    })
}

/// What `--version` prints: runc's first line shape ("NAME version X") and the OCI
/// runtime spec version, which go-runc's version parser reads.
pub fn version_text() -> String {
    format!(
        "ward version {}\nspec: {}\nagent protocol: {}",
        env!("CARGO_PKG_VERSION"),
        oci_spec::runtime::Spec::default().version(),
        ward_agent_protocol::PROTOCOL_VERSION
    )
}

/// Runs one command; returns the process exit code.
pub fn execute(cli: &Cli, ctx: &Context) -> Result<i32, CliError> {
    let Some(command) = &cli.command else {
        return Err(CliError::Usage("no command given: see ward --help".into()));
    };
    match command {
        Command::Version => {
            println!("{}", version_text());
            Ok(0)
        }
        Command::Create(args) => create::execute(ctx, args),
        Command::Start(args) => start::execute(ctx, args),
        Command::State(args) => state::execute(ctx, args),
        Command::Kill(args) => kill::execute(ctx, args),
        Command::Delete(args) => delete::execute(ctx, args),
        Command::Run(args) => run::execute(ctx, args),
        Command::Exec(args) => exec::execute(ctx, args),
        Command::List(args) => list::execute(ctx, args),
        Command::Update(args) => update::execute(ctx, args),
        Command::Events(args) => events::execute(ctx, args),
        Command::Pause(args) => pause::pause(ctx, args),
        Command::Resume(args) => pause::resume(ctx, args),
        Command::Ps(args) => ps::execute(ctx, args),
        Command::Spec(args) => spec::execute(args),
        Command::Features(_) => features::execute(),
        Command::Relay(args) => relay::execute(ctx, args),
        Command::Check(args) => check::execute(ctx, args),
        Command::Env(args) => env::execute(ctx, args),
    }
}
