//! `sockmesh`: the node agent and its command-line interface.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sockmesh_agent::{ca_server, cli, policy::cli as policy_cli, run, uninstall};

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
    Run(Box<run::RunArgs>),
    /// Run the CA server: Istio's CA API over the plug-in CA, TokenReview, node authorizer.
    Ca(ca_server::CaArgs),
    /// Show this node's workloads and their capture/identity state (from a running agent).
    Status(cli::ClientArgs),
    /// Show the workload certificates a running agent holds.
    Certs(cli::ClientArgs),
    /// Show a running agent's open connections, with mode and peer identity.
    Connections(cli::ClientArgs),
    /// Explain the TLS and authorization decisions for one connection and which resources made them.
    Explain(policy_cli::ExplainArgs),
    /// Validate the configuration and report misconfigurations with stable codes.
    Check(policy_cli::CheckArgs),
    /// For every service a pod can reach: client mode, server mode, OK or CONFLICT.
    TlsCheck(policy_cli::TlsCheckArgs),
    /// Detach every program and remove every pin of an agent.
    Uninstall(uninstall::UninstallArgs),
}

fn main() -> ExitCode {
    sockmesh_agent::logging::init();
    let cli = Cli::parse();
    let ok = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Run(args) => ok(run_agent(*args)),
        Command::Ca(args) => ok(run_ca(args)),
        Command::Status(args) => ok(cli::status(&args)),
        Command::Certs(args) => ok(cli::certs(&args)),
        Command::Connections(args) => ok(cli::connections(&args)),
        Command::Explain(args) => policy_cli::run_explain(&args),
        Command::Check(args) => policy_cli::run_check(&args),
        Command::TlsCheck(args) => policy_cli::run_tls_check(&args),
        Command::Uninstall(args) => ok(uninstall::uninstall(&args)),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}

fn run_agent(args: run::RunArgs) -> anyhow::Result<()> {
    sockmesh_agent::memory::limit_malloc_arenas();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.worker_threads(args.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }));
    runtime.enable_all().build()?.block_on(run::run(args))
}

fn run_ca(args: ca_server::CaArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(ca_server::run(args))
}
