//! `ward delete [--force] ID`

use crate::cli::CliError;
use crate::container::{lifecycle, Context};

pub fn execute(ctx: &Context, args: &liboci_cli::Delete) -> Result<i32, CliError> {
    lifecycle::delete(ctx, &args.container_id, args.force)?;
    Ok(0)
}
