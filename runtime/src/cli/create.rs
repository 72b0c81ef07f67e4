//! `ward create [--bundle B] [--pid-file F] ID`

use crate::cli::CliError;
use crate::container::{lifecycle, Context};

pub fn execute(ctx: &Context, args: &liboci_cli::Create) -> Result<i32, CliError> {
    crate::cli::refuse_preserved_fds(args.preserve_fds)?;
    lifecycle::create(
        ctx,
        &args.bundle,
        &args.container_id,
        args.pid_file.as_deref(),
        args.console_socket.as_deref(),
    )?;
    Ok(0)
}
