//! `sockmesh`: the node agent and its command-line interface.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sockmesh_agent::policy::cli;

#[derive(Debug, Parser)]
#[command(
    name = "sockmesh",
    version,
    about = "Sidecar-less mTLS for Kubernetes pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Explain the TLS decision for one connection and which resources made it.
    Explain(cli::ExplainArgs),
    /// Validate the configuration and report misconfigurations with stable codes.
    Check(cli::CheckArgs),
    /// For every service a pod can reach: client mode, server mode, OK or CONFLICT.
    TlsCheck(cli::TlsCheckArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Explain(args) => cli::run_explain(args),
        Command::Check(args) => cli::run_check(args),
        Command::TlsCheck(args) => cli::run_tls_check(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}
