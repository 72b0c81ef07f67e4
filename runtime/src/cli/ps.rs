//! `ward ps [--format table|json] ID`. The processes live in the guest, so the PIDs are
//! guest PIDs: `json` is the array of them (what containerd's shim reads), `table` adds
//! each one's parent and command line.

use crate::cli::CliError;
use crate::container::{lifecycle, Context};

pub fn execute(ctx: &Context, args: &liboci_cli::Ps) -> Result<i32, CliError> {
    if !matches!(args.format.as_str(), "table" | "json") {
        return Err(CliError::Usage(format!(
            "invalid format option {:?}: expected table or json",
            args.format
        )));
    }
    if !args.ps_options.is_empty() {
        return Err(CliError::Usage(
            "ps options are not supported: the processes run in the guest, without ps(1)".into(),
        ));
    }
    let processes = lifecycle::processes(ctx, &args.container_id)?;
    if args.format == "json" {
        let pids: Vec<i32> = processes.iter().map(|p| p.pid).collect();
        println!("{}", serde_json::Value::from(pids));
        return Ok(0);
    }
    println!("{:>7} {:>7} CMD", "PID", "PPID");
    for p in processes {
        println!("{:>7} {:>7} {}", p.pid, p.ppid, p.cmd);
    }
    Ok(0)
}
