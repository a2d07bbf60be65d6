//! `sockmesh`: the node agent and its command-line interface.
use clap::{Parser, Subcommand};
use sockmesh_agent::{cli, run, uninstall};

#[derive(Parser)]
#[command(
    name = "sockmesh",
    version,
    about = "Sidecar-less mutual TLS for Kubernetes pods"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: capture, enroll pods, proxy.
    Run(run::RunArgs),
    /// Detach every program and remove every pin of an agent.
    Uninstall(uninstall::UninstallArgs),
    /// Show this node's workloads and their capture/identity state (from a running agent).
    Status(cli::ClientArgs),
    /// Show the workload certificates a running agent holds.
    Certs(cli::ClientArgs),
    /// Show a running agent's open connections, with mode and peer identity.
    Connections(cli::ClientArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            sockmesh_agent::logging::init();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(run::run(args))
        }
        Command::Uninstall(args) => uninstall::uninstall(&args),
        Command::Status(args) => cli::status(&args),
        Command::Certs(args) => cli::certs(&args),
        Command::Connections(args) => cli::connections(&args),
    }
}
