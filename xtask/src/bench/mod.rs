//! `cargo xtask bench`: pod to pod across two emulated nodes, direct versus sockmesh (DISABLE and
//! ISTIO_MUTUAL) versus a reference HAProxy pair (mTLS and plain), interleaved per round as in
//! shared/notes/perf-anchors.md, reported as medians and as ratios to direct in the same round.
pub(crate) mod agents;
mod bpfstats;
mod certs;
mod configs;
mod haproxy;
pub(crate) mod measure;
mod plot;
mod podmemory;
mod profile;
mod report;
mod topology;
mod workloads;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::cmd::Cmd;
use configs::{Config, Proxies, Setup};
use topology::Topology;
use workloads::{Outcome, Workload};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Interleaved rounds; every configuration runs every workload once per round.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// A smoke run of the whole harness: 1 round of 3 s, 50 pods for memory per pod.
    #[arg(long)]
    quick: bool,
    /// Enroll 1,000 pods for memory per pod (the default is 200).
    #[arg(long)]
    full: bool,
    /// Pods enrolled for memory per pod (overrides --quick and --full).
    #[arg(long)]
    pods: Option<usize>,
    /// Configurations to run (comma-separated); direct always runs, as the baseline.
    #[arg(long, value_enum, value_delimiter = ',')]
    configs: Vec<Config>,
    /// Workloads to run (comma-separated); all of them when not given.
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Records a `perf` profile of the proxies for each configuration and workload into this
    /// directory (`<config>-<workload>.data`; read with `perf report -i`).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Extra flag for `sockmesh run`, repeatable (e.g. `--agent-flag=--worker-threads=2`).
    #[arg(long = "agent-flag", allow_hyphen_values = true)]
    agent_flags: Vec<String>,
    /// Markdown report; the SVG plot goes next to it with the extension `.svg`.
    #[arg(long, default_value = "docs/performance.md")]
    out: PathBuf,
}

/// One run of one workload in one block.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub outcome: Outcome,
    /// Both proxies' CPU seconds during the run.
    pub proxy_cpu_s: f64,
}

/// Everything measured in one configuration's block of one round.
#[derive(Debug, Clone)]
pub struct Block {
    pub config: Config,
    pub round: usize,
    pub runs: BTreeMap<Workload, Run>,
    /// Larger of the two proxies' VmRSS at the end of the block, and of their VmHWM (MB).
    pub rss_mb: Option<f64>,
    pub hwm_mb: Option<f64>,
    /// BPF program runs per connection over the `Connection: close` run, by `<node>/<program>`.
    pub bpf: BTreeMap<String, bpfstats::Runs>,
}

/// What the report is made of.
pub struct Results {
    pub blocks: Vec<Block>,
    pub configs: Vec<Config>,
    pub pod_memory: Option<podmemory::PodMemory>,
    /// Runs or checks that failed; the report lists them.
    pub problems: Vec<String>,
    pub command: String,
    pub load_at_start: String,
    pub duration_s: u64,
}

pub fn run(root: &Path, args: BenchArgs) -> Result<()> {
    if !Cmd::new("id").arg("-u").read()?.trim().eq("0") {
        bail!("cargo xtask bench builds namespaces, cgroups and BPF programs: run it as root");
    }
    let load_at_start = std::fs::read_to_string("/proc/loadavg")?.trim().to_owned();
    let command = format!(
        "cargo xtask {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let (rounds, duration) = if args.quick {
        (1, 3)
    } else {
        (args.rounds.max(1), args.duration.max(1))
    };
    let pods = args.pods.unwrap_or(if args.full {
        1000
    } else if args.quick {
        50
    } else {
        200
    });
    let mut configs = vec![Config::Direct];
    configs.extend(if args.configs.is_empty() {
        Config::ALL[1..].to_vec()
    } else {
        args.configs
            .iter()
            .copied()
            .filter(|c| *c != Config::Direct)
            .collect()
    });
    crate::setup::debian_packages().context("installing iperf3, wrk, haproxy, nginx")?;
    let binary = build_agent(root)?;
    println!("bench: load at start {load_at_start}; {rounds} round(s) of {duration} s runs");

    let topology = Topology::build()?;
    let setup = Setup {
        binary: &binary,
        agent_flags: &args.agent_flags,
        workloads: if args.workloads.is_empty() {
            Workload::ALL.to_vec()
        } else {
            args.workloads.clone()
        },
        profile: args.profile.clone(),
    };
    if let Some(dir) = &setup.profile {
        std::fs::create_dir_all(dir)?;
    }
    ensure_mesh_ca(&topology, &setup)?;
    let ticks = measure::clock_ticks()?;
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    let gap = Duration::from_secs(if args.quick { 1 } else { 2 });
    for round in 1..=rounds {
        for &config in &configs {
            println!("bench: round {round}/{rounds}: {}", config.title());
            let block = run_block(
                &topology,
                &setup,
                config,
                round,
                duration,
                gap,
                ticks,
                &mut problems,
            )
            .with_context(|| format!("round {round}, {}", config.title()))?;
            blocks.push(block);
        }
    }
    drop(topology);
    let pod_memory = match podmemory::measure(&binary, pods) {
        Ok(memory) => Some(memory),
        Err(error) => {
            problems.push(format!("memory per enrolled pod: {error:#}"));
            None
        }
    };
    let results = Results {
        blocks,
        configs,
        pod_memory,
        problems,
        command,
        load_at_start,
        duration_s: duration,
    };
    let out = root.join(&args.out);
    report::write(&results, &out)?;
    Ok(())
}

/// Builds the agent in release mode, into the caller's target directory.
pub(crate) fn build_agent(root: &Path) -> Result<PathBuf> {
    Cmd::new("cargo")
        .args([
            "build",
            "--release",
            "-p",
            "sockmesh-agent",
            "--bin",
            "sockmesh",
        ])
        .current_dir(root)
        .run()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let binary = target.join("release/sockmesh");
    if !binary.is_file() {
        bail!("no agent binary at {}", binary.display());
    }
    Ok(binary)
}

/// The HAProxy pair uses the mesh CA, which sockmesh creates on its first start: start and stop
/// the client node's agent once when no sockmesh block has done it yet.
fn ensure_mesh_ca(topology: &Topology, setup: &Setup<'_>) -> Result<()> {
    if topology.nodes[0].ca_dir().join("ca-key.pem").is_file() {
        return Ok(());
    }
    agents::RunningAgent::start(
        setup.binary,
        &topology.nodes[0],
        &topology.config_dir(),
        setup.agent_flags,
    )?
    .stop()
}

#[allow(clippy::too_many_arguments)]
fn run_block(
    topology: &Topology,
    setup: &Setup<'_>,
    config: Config,
    round: usize,
    duration: u64,
    gap: Duration,
    ticks: f64,
    problems: &mut Vec<String>,
) -> Result<Block> {
    let proxies = Proxies::start(config, topology, setup)?;
    let targets = proxies.targets(topology);
    let url = format!("http://{}/", targets.http);
    topology::wait_http(&topology.client, &url, Duration::from_secs(15))
        .with_context(|| format!("no traffic passes; proxy logs:\n{}", proxies.logs()))?;
    if let Err(error) = proxies.verify(config) {
        problems.push(format!("round {round}: {error:#}"));
    }
    let pids = proxies.pids();
    let mut block = Block {
        config,
        round,
        runs: BTreeMap::new(),
        rss_mb: None,
        hwm_mb: None,
        bpf: BTreeMap::new(),
    };
    for &workload in &setup.workloads {
        let count_bpf = config.is_sockmesh() && workload == Workload::Close16;
        let stats = count_bpf.then(bpfstats::StatsEnabled::new).transpose()?;
        let pin_dirs = proxies.pin_dirs(topology);
        let bpf_before = if count_bpf {
            bpfstats::snapshot(&pin_dirs)?
        } else {
            BTreeMap::new()
        };
        let profile = match &setup.profile {
            Some(dir) if !pids.is_empty() => Some(profile::Recording::start(
                &pids,
                &dir.join(format!("{config:?}-{workload:?}.data").to_lowercase()),
            )?),
            _ => None,
        };
        let cpu_before = measure::pair_cpu(&pids, ticks)?;
        let outcome = workloads::run(
            &topology.client,
            targets,
            workload,
            Duration::from_secs(duration),
        );
        let cpu_after = measure::pair_cpu(&pids, ticks)?;
        if let Some(profile) = profile {
            profile.finish()?;
        }
        match outcome {
            Ok(outcome) => {
                if outcome.errors > 0 {
                    problems.push(format!(
                        "round {round}, {}, {workload:?}: {} socket errors or non-2xx responses",
                        config.title(),
                        outcome.errors
                    ));
                }
                if count_bpf {
                    let after = bpfstats::snapshot(&pin_dirs)?;
                    block.bpf = bpfstats::per_connection(&bpf_before, &after, outcome.requests);
                }
                block.runs.insert(
                    workload,
                    Run {
                        outcome,
                        proxy_cpu_s: cpu_after - cpu_before,
                    },
                );
            }
            Err(error) => problems.push(format!(
                "round {round}, {}, {workload:?}: {error:#}",
                config.title()
            )),
        }
        drop(stats);
        std::thread::sleep(gap);
    }
    if !pids.is_empty() {
        let memory = pids
            .iter()
            .map(|&pid| measure::memory(pid))
            .collect::<Result<Vec<_>>>()?;
        block.rss_mb = memory.iter().map(|m| m.rss_mb).reduce(f64::max);
        block.hwm_mb = memory.iter().map(|m| m.hwm_mb).reduce(f64::max);
    }
    drop(proxies);
    Ok(block)
}
