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

/// jemalloc rather than glibc's malloc: memory that connections free goes back to the system
/// within seconds (glibc's arenas kept what 10,000 idle clients had used after they left),
/// and the request path's many small allocations cost fewer instructions (see
/// docs/benchmarks.md, "The gateway's own HTTP/1.1 engine").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
