//! `ward pause ID` and `ward resume ID`: freeze and thaw the container's processes in the
//! guest (cgroup v2 freezer); the VM itself keeps running, so exec'd helpers and the agent
//! stay reachable.

use crate::cli::CliError;
use crate::container::{lifecycle, Context};

pub fn pause(ctx: &Context, args: &liboci_cli::Pause) -> Result<i32, CliError> {
    lifecycle::set_paused(ctx, &args.container_id, true)?;
    Ok(0)
}

pub fn resume(ctx: &Context, args: &liboci_cli::Resume) -> Result<i32, CliError> {
    lifecycle::set_paused(ctx, &args.container_id, false)?;
    Ok(0)
}
