//! `containerd-shim-ward-v2`, the front end for containerd (runtime type
//! `io.containerd.ward.v2`): one shim process per pod, serving containerd's task API over
//! ttrpc on top of the lifecycle library, as the `ward` CLI serves runc's command line.
//!
//! - `start`: which shim serves a new container (the pod grouping);
//! - `service`: the task service; `stdio`: the FIFOs; `rootfs`: the snapshot mounts;
//! - `events`: what containerd hears; `metrics`: the guest's cgroup numbers for it.
//!
//! The shim keeps its containers' state under `/run/ward-shim/<namespace>`, apart from
//! `/run/ward`, whose entries `ward list` would show as the CLI's containers. The
//! configuration is the file the runtime's options name (CRI's `ConfigPath`, `ctr run
//! --runtime-config-path`; the start action hands it to the serving shim as
//! `WARD_CONFIG`), else the one the CLI would use: `WARD_CONFIG` (containerd passes its
//! own environment to its shims), else /etc/ward/configuration.toml.

pub mod events;
pub mod metrics;
pub mod rootfs;
pub mod serve;
pub mod service;
pub mod start;
pub mod stdio;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, Flags, StartOpts};
use slog::{o, warn, Drain, Logger};
use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::container::{lifecycle, Context, LifecycleError, Store, StoreError};
use crate::logging::{self, LogError};

use events::Events;
pub use service::Service;

/// The runtime type containerd knows the shim by (`ctr run --runtime`).
pub const RUNTIME_ID: &str = "io.containerd.ward.v2";
/// Container state of the shim, one directory per containerd namespace.
pub const STATE_ROOT: &str = "/run/ward-shim";
/// The FIFO containerd creates in the bundle for the shim's log.
const LOG_FIFO: &str = "log";

#[derive(Debug, Error)]
pub enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("invalid containerd namespace {0:?}")]
    Namespace(String),
    #[error("finding the bundle (the working directory): {0}")]
    Bundle(#[source] std::io::Error),
}

/// The shim's options for the containerd-shim library: we log through slog, and the
/// library reaps our children (the VM's helpers are re-parented to us, the subreaper).
pub fn library_config() -> containerd_shim::Config {
    containerd_shim::Config {
        no_setup_logger: true,
        ..Default::default()
    }
}

/// Where the log goes: containerd's log FIFO in the bundle when containerd reads it (it
/// does while a shim serves), else stderr (which containerd shows for a failed action).
fn log_sink(bundle: &Path) -> Box<dyn std::io::Write + Send> {
    let fifo = bundle.join(LOG_FIFO);
    let is_fifo = std::fs::metadata(&fifo).is_ok_and(|m| m.file_type().is_fifo());
    if is_fifo {
        // Non-blocking open: it fails at once, instead of hanging, when no one reads.
        let opened: std::io::Result<File> = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        if let Ok(file) = opened {
            // Blocking writes from here on: a full FIFO slows us down rather than losing lines.
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
            );
            return Box::new(file);
        }
    }
    Box::new(std::io::stderr())
}

fn logger(bundle: &Path, config: &Config, debug: bool) -> Result<Logger, SetupError> {
    let level = match (&config.log.level, debug) {
        (_, true) => slog::Level::Debug,
        (Some(level), false) => logging::parse_level(level)?,
        (None, false) => slog::Level::Info,
    };
    let decorator = slog_term::PlainSyncDecorator::new(log_sink(bundle));
    // A log write that fails (containerd restarted and its FIFO has no reader) must not
    // take the shim down with the containers it serves.
    let drain = slog_term::FullFormat::new(decorator).build().ignore_res();
    let drain = slog::LevelFilter::new(drain, level).fuse();
    Ok(Logger::root(drain, o!("shim" => std::process::id())))
}

/// The library context for one containerd namespace.
pub fn context(namespace: &str, bundle: &Path, debug: bool) -> Result<Context, SetupError> {
    let valid =
        !namespace.is_empty() && namespace != "." && namespace != ".." && !namespace.contains('/');
    if !valid {
        return Err(SetupError::Namespace(namespace.to_string()));
    }
    let config = Config::load(None)?;
    let log = logger(bundle, &config, debug)?;
    Ok(Context {
        store: Store::new(Path::new(STATE_ROOT).join(namespace)),
        config,
        log,
        relay_flags: Vec::new(),
    })
}

/// The shim binary's actions (start, delete, serve) for the containerd-shim library.
pub struct WardShim {
    namespace: String,
    id: String,
    bundle: PathBuf,
    debug: bool,
    exit: Arc<ExitSignal>,
}

fn other(e: impl std::fmt::Display) -> containerd_shim::Error {
    containerd_shim::Error::Other(e.to_string())
}

impl containerd_shim::Shim for WardShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut containerd_shim::Config) -> Self {
        // containerd runs every action in the bundle directory; -bundle says so explicitly.
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        WardShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle,
            debug: args.debug,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // A bad configuration fails `ctr run` here, with the reason, rather than later
        // inside a shim whose errors only reach containerd's log.
        match start::config_path(&opts.extensions) {
            Some(path) => {
                Config::load(Some(&path)).map_err(other)?;
            }
            None => {
                context(&self.namespace, &self.bundle, self.debug).map_err(other)?;
            }
        }
        // Only the bootstrap protocol (containerd 2.3+) tells its version.
        let legacy = opts.containerd_version.is_empty();
        let address = start::start(opts, &self.bundle).map_err(other)?;
        if legacy {
            // The library answers the legacy protocol with the JSON of containerd 1.7+,
            // which containerd 1.6 dials as if it were the address. Every containerd
            // before the bootstrap protocol takes the plain address, so give that and
            // end the action here.
            let mut stdout = std::io::stdout().lock();
            let written = stdout
                .write_all(address.as_bytes())
                .and_then(|()| stdout.flush());
            written.map_err(|err| containerd_shim::Error::IoError {
                context: "writing the shim address".into(),
                err,
            })?;
            std::process::exit(0);
        }
        Ok(address)
    }

    /// containerd's clean-up after a shim that is gone: whatever of the container is left.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let ctx = context(&self.namespace, &self.bundle, self.debug).map_err(other)?;
        match lifecycle::delete(&ctx, &self.id, true) {
            Ok(()) | Err(LifecycleError::Store(StoreError::NotFound(_))) => {}
            Err(e) => warn!(ctx.log, "deleting after the shim"; "container" => &self.id,
                            "error" => e.to_string()),
        }
        if let Err(e) = rootfs::unmount_all(&self.id, &self.bundle.join("rootfs"), 8) {
            warn!(ctx.log, "unmounting the rootfs"; "container" => &self.id, "error" => e.to_string());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let exited_at = containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
            ..Default::default()
        };
        Ok(DeleteResponse {
            // What runc's shim reports for a process that died with its shim: SIGKILL.
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: MessageField::some(exited_at),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        let ctx = context(&self.namespace, &self.bundle, self.debug);
        let log = match &ctx {
            Ok(ctx) => ctx.log.clone(),
            Err(_) => Logger::root(slog::Discard, o!()),
        };
        if let Err(e) = &ctx {
            // Every request will fail with this; say it once where containerd logs.
            eprintln!("{RUNTIME_ID}: {e}");
        }
        let events = Events::start(publisher, self.namespace.clone(), log.clone());
        Service::new(
            ctx.map_err(|e| e.to_string()),
            log,
            events,
            self.exit.clone(),
        )
    }
}
