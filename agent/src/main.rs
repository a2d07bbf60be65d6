//! `sockmesh`: the node agent and its command-line interface.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sockmesh_agent::{policy::cli, run, uninstall};

#[derive(Debug, Parser)]
#[command(
    name = "sockmesh",
    version,
    about = "Sidecar-less mutual TLS for Kubernetes pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent: capture, enroll pods, proxy.
    Run(run::RunArgs),
    /// Explain the TLS decision for one connection and which resources made it.
    Explain(cli::ExplainArgs),
    /// Validate the configuration and report misconfigurations with stable codes.
    Check(cli::CheckArgs),
    /// For every service a pod can reach: client mode, server mode, OK or CONFLICT.
    TlsCheck(cli::TlsCheckArgs),
    /// Detach every program and remove every pin of an agent.
    Uninstall(uninstall::UninstallArgs),
}

fn main() -> ExitCode {
    sockmesh_agent::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_agent(args).map(|()| ExitCode::SUCCESS),
        Command::Explain(args) => cli::run_explain(&args),
        Command::Check(args) => cli::run_check(&args),
        Command::TlsCheck(args) => cli::run_tls_check(&args),
        Command::Uninstall(args) => uninstall::uninstall(&args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

fn run_agent(args: run::RunArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run::run(args))
}
