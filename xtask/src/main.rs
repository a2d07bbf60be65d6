//! Developer tasks for the sockmesh workspace, run as `cargo xtask <task>` (alias in
//! .cargo/config.toml). One module per task; `cmd` runs external commands.
mod bench;
mod cmd;
mod demo;
mod scale;
mod setup;
mod soak;
mod test;
mod validate;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "sockmesh developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what builds and tests need: rust-src for the pinned nightly, bpf-linker built
    /// against its LLVM, Debian packages, the manifest validator. Idempotent.
    Setup,
    /// Setup, then fmt, clippy, all workspace tests, the manifest validation and the short soak
    /// (what CI runs).
    Test,
    /// Validate every manifest under deploy/ offline against the Kubernetes schemas.
    ValidateManifests,
    /// The seed article on this machine (root): two nodes, an agent on each, every policy step
    /// with its connectivity matrix; exits non-zero when a connection misbehaves.
    Demo {
        /// Leave the topology and agents running for exploration.
        #[arg(long, conflicts_with = "clean")]
        keep: bool,
        /// Only remove what earlier `--keep` runs (or crashed tests) left behind.
        #[arg(long)]
        clean: bool,
        /// Run the agents as in a cluster: `--kubernetes` against the test bed's API server,
        /// policies applied through the API.
        #[arg(long, conflicts_with = "clean")]
        kubernetes: bool,
    },
    /// Benchmark pod to pod: direct, sockmesh DISABLE and ISTIO_MUTUAL, and a reference HAProxy
    /// pair (mTLS and plain), interleaved per round; writes docs/performance.md and its plot.
    /// Needs root.
    Bench(bench::BenchArgs),
    /// Hostile and heavy load against two agents on the test bed (issue 12): attackers against
    /// STRICT, slowloris, 10,000 concurrent connections, kill -9, config churn, certificate
    /// rotation; prints one table and fails when a security invariant or a return to baseline
    /// does not hold. `--short` is the CI version. Needs root.
    Soak(soak::SoakArgs),
    /// One agent in `--kubernetes` mode against a large cluster in the test bed's API server
    /// (10,000 pods, 2,000 Services, 2,000 policies): memory and reload time.
    Scale(scale::ScaleArgs),
    /// A program the soak runs inside a pod (not for direct use).
    #[command(hide = true)]
    SoakPod {
        #[command(subcommand)]
        tool: soak::pod::Tool,
    },
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_owned()
}

fn main() -> ExitCode {
    let root = workspace_root();
    let result: Result<()> = match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Test => test::run(&root),
        Task::ValidateManifests => validate::run(&root),
        Task::Demo {
            keep,
            clean,
            kubernetes,
        } => demo::run(&root, keep, clean, kubernetes),
        Task::Bench(args) => bench::run(&root, args),
        Task::Soak(args) => soak::run(args),
        Task::Scale(args) => scale::run(&root, args),
        Task::SoakPod { tool } => soak::pod::run(tool),
    };
    // The error chain says what failed; a backtrace of xtask itself would only bury it.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
