//! `ward delete [--force] ID`

use crate::cli::CliError;
use crate::container::{lifecycle, Context, LifecycleError, StoreError};

pub fn execute(ctx: &Context, args: &liboci_cli::Delete) -> Result<i32, CliError> {
    match lifecycle::delete(ctx, &args.container_id, args.force) {
        // As runc: --force makes "already gone" a success, so an engine cleaning up after
        // a failed create gets no error for a container that never came to be.
        Err(LifecycleError::Store(StoreError::NotFound(_))) if args.force => Ok(0),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(0),
    }
}
