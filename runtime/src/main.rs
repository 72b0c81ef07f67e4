//! `ward`: a runc-compatible OCI runtime that runs each container inside its own microVM.

mod check;
mod cli;
mod config;
mod container;
mod hooks;
mod logging;
mod relay;
mod sandbox;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if cli.version {
        println!("{}", cli::version_text());
        return;
    }
    let ctx = match cli::context(&cli.global, cli.config.as_deref()) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("ward: {e}");
            std::process::exit(1);
        }
    };
    let code = match cli::execute(&cli, &ctx) {
        Ok(code) => code,
        Err(e) => {
            // People read stderr; engines read the reason back from the --log file.
            if cli.global.log.is_some() {
                slog::error!(ctx.log, "{}", e);
            }
            eprintln!("ward: {e}");
            1
        }
    };
    drop(ctx);
    std::process::exit(code);
}
