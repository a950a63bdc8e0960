//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Floodgate: an API gateway and traffic-governance server.
#[derive(Parser)]
#[command(version, about, long_about = None)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the gateway with a configuration file (reloaded on change and on SIGHUP).
    Run {
        /// The YAML configuration file.
        #[arg(short, long, default_value = "floodgate.yaml")]
        config: PathBuf,
    },
    /// Check configuration files without starting; prints every error with its location.
    Validate {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show which route a request would meet and what would happen to it.
    Explain {
        /// The YAML configuration file.
        #[arg(short, long, default_value = "floodgate.yaml")]
        config: PathBuf,
        /// The listener to ask (default: the first).
        #[arg(short, long)]
        listener: Option<String>,
        /// HTTP method, such as GET.
        method: String,
        /// Absolute URL, such as http://shop.example.com/api/products/42.
        url: String,
        /// Request headers, `-H 'name: value'`, repeatable.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
    },
    /// Print the JSON Schema of the configuration file.
    Schema,
    /// Run a demo: the gateway on an embedded config in front of a built-in catalog service.
    Demo(DemoArgs),
}

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Gateway port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub(crate) port: u16,
    /// Admin port on 127.0.0.1 (metrics, health).
    #[arg(long, default_value_t = 9901)]
    pub(crate) admin_port: u16,
    /// Share of requests to the catalog's /flaky endpoint that fail with 503 (0.0 to 1.0).
    #[arg(long, default_value_t = 0.3)]
    pub(crate) flaky_rate: f64,
}
