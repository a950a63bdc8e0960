//! The `floodgate` binary: parse the command line, then hand over to the command.
//!
//! Layout: `cli` (arguments), `run` (start, serve, reload, shut down), `commands` (validate,
//! explain, schema), `demo` (the embedded demo config and its catalog upstream), `logging`.

mod cli;
mod commands;
mod demo;
mod logging;
mod run;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Run { config } => run::run_file(&config),
        cli::Command::Validate { files } => commands::validate(&files),
        cli::Command::Explain {
            config,
            listener,
            method,
            url,
            headers,
        } => commands::explain(&config, listener.as_deref(), &method, &url, &headers),
        cli::Command::Schema => commands::schema(),
        cli::Command::Demo(args) => demo::run(&args),
    }
}
