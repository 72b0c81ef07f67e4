//! `ward kill [--all] ID [SIGNAL]`. liboci-cli's Kill makes SIGNAL mandatory; runc defaults
//! it to SIGTERM, and engines rely on that, so this command has its own arguments.

use clap::Args;

use crate::cli::CliError;
use crate::container::{lifecycle, Context};
use crate::relay::signals;

#[derive(Debug, Args)]
pub struct Kill {
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new(), required = true)]
    pub container_id: String,
    /// A signal name (TERM, SIGTERM) or number
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
    /// Send the signal to every process of the container
    #[arg(short, long)]
    pub all: bool,
}

pub fn execute(ctx: &Context, args: &Kill) -> Result<i32, CliError> {
    let signal = signals::parse(&args.signal)
        .ok_or_else(|| CliError::Usage(format!("unknown signal {:?}", args.signal)))?;
    lifecycle::kill(ctx, &args.container_id, signal, args.all)?;
    Ok(0)
}
