//! `ward state ID`: the OCI state document, as runc prints it.

use crate::cli::CliError;
use crate::container::Context;

pub fn execute(ctx: &Context, args: &liboci_cli::State) -> Result<i32, CliError> {
    let state = ctx.store.load(&args.container_id)?;
    let text = serde_json::to_string_pretty(&state.oci_state()).map_err(|e| CliError::Io {
        what: "formatting the state".into(),
        source: e.into(),
    })?;
    println!("{text}");
    Ok(0)
}
