//! `ward check`: host diagnostics.

use clap::Args;

use super::CliError;
use crate::container::Context;

#[derive(Debug, Args)]
pub struct Check {
    /// Print one JSON document (items and a summary) instead of text
    #[arg(long)]
    pub json: bool,
    /// Show the facts behind each item (paths, measurements)
    #[arg(long)]
    pub verbose: bool,
    /// Treat warnings as failures (exit status 1)
    #[arg(long)]
    pub strict: bool,
}

/// Exit 0 when ward can run here (no failure; with --strict, no warning either), 1 if not.
pub fn execute(ctx: &Context, args: &Check) -> Result<i32, CliError> {
    let report = crate::check::run(&ctx.config);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text(args.verbose));
    }
    Ok(report.exit_code(args.strict))
}
