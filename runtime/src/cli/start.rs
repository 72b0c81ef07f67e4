//! `ward start ID`

use crate::cli::CliError;
use crate::container::{lifecycle, Context};

pub fn execute(ctx: &Context, args: &liboci_cli::Start) -> Result<i32, CliError> {
    lifecycle::start(ctx, &args.container_id)?;
    Ok(0)
}
