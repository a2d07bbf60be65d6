//! `cargo xtask soak [--short]` (issue 12): two agents on the test bed under hostile and heavy
//! load, one table. Attackers outside the mesh against a STRICT port (counted at the app),
//! slowloris on STRICT and PERMISSIVE ports, a burst of concurrent mesh connections, `kill -9`
//! of either agent mid-transfer, config churn and certificate rotation under traffic.
//!
//! The security invariants and "resources back to baseline" are asserted (the run fails);
//! everything else is reported with its target. `docs/reliability.md` explains every row.
mod agent;
mod burst;
mod certs;
mod churn;
mod hostile;
mod kill;
pub mod pod;
mod report;
mod slowloris;
mod traffic;
mod world;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use agent::{SoakAgent, Usage};
use report::Report;
use traffic::{Probe, Summary};
use world::World;

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// The CI version: fewer attempts and connections, a few minutes at most.
    #[arg(long)]
    short: bool,
}

impl SoakArgs {
    /// What `cargo xtask test` runs.
    pub fn short() -> Self {
        SoakArgs { short: true }
    }
}

/// How hard each phase pushes.
struct Scale {
    /// Attempts per hostile kind.
    attempts: usize,
    slowloris_conns: usize,
    slowloris_secs: f64,
    burst_conns: usize,
    burst_hold_secs: f64,
    churn_changes: usize,
    churn_secs: f64,
    rotation_secs: f64,
}

const SHORT: Scale = Scale {
    attempts: 50,
    slowloris_conns: 200,
    slowloris_secs: 6.0,
    burst_conns: 1_000,
    burst_hold_secs: 3.0,
    churn_changes: 100,
    churn_secs: 5.0,
    rotation_secs: 10.0,
};

const FULL: Scale = Scale {
    attempts: 1_000,
    slowloris_conns: 2_000,
    slowloris_secs: 20.0,
    burst_conns: 10_000,
    burst_hold_secs: 10.0,
    churn_changes: 1_000,
    churn_secs: 30.0,
    rotation_secs: 30.0,
};

/// Open files for the soak and everything it starts (agents, pod programs): 10,000 connections
/// cost an agent 20,000 descriptors and more.
const NOFILE: u64 = 1 << 18;
/// Descriptors an agent holds besides the burst's (listeners, maps, pooled connections).
const FD_RESERVE: u64 = 400;

pub fn run(args: SoakArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        if std::env::var_os("CI").is_none() {
            eprintln!(
                "\n*** SKIPPED (needs root): the soak builds namespaces, cgroups and BPF programs ***\n"
            );
            return Ok(());
        }
        bail!("the soak needs root, and CI is set: run it as root");
    }
    let scale = if args.short { &SHORT } else { &FULL };
    let (nofile, raised) = raise_nofile()?;
    // As the end-to-end tests build it (a no-op after them in `cargo xtask test`), or
    // $SOCKMESH_BIN.
    let binary = testbed::sockmesh_bin()?;
    let load = std::fs::read_to_string("/proc/loadavg")?;
    let started = Instant::now();
    let mut world = World::build(&binary)?;
    let mut report = Report::default();
    let warm_up =
        Summary::of(&Probe::start(&world.client, world.mesh_addr(), 1.0, false)?.finish()?);
    if warm_up.ok == 0 {
        bail!(
            "no mesh connection works before the soak ({warm_up}); agent logs:\n{}\n{}",
            world.agent(0)?.log(),
            world.agent(1)?.log()
        );
    }
    report.figure(
        "agent open-file limit",
        format!(
            "{} ({}; agents inherit the soak's)",
            world.agent(1)?.fd_limit()?,
            if raised {
                "raised by the soak"
            } else {
                "this machine's hard limit: the soak may not raise it"
            }
        ),
    );
    let phase = |name: &str, result: Result<()>, report: &mut Report| {
        if let Err(error) = result {
            report.broken(name, &error);
        }
    };
    println!("soak: hostile clients against STRICT");
    let result = hostile::run(&world, scale.attempts, &mut report);
    phase("hostile", result, &mut report);
    println!("soak: slowloris");
    let result = slowloris::run(
        &world,
        scale.slowloris_conns,
        scale.slowloris_secs,
        &mut report,
    );
    phase("slowloris", result, &mut report);
    let burst_conns = fitting_burst(scale.burst_conns, nofile, &mut report);
    println!("soak: {burst_conns} concurrent mesh connections");
    let result = burst::run(&world, burst_conns, scale.burst_hold_secs, &mut report);
    phase("burst", result, &mut report);
    println!("soak: config churn");
    let result = churn::config(&world, scale.churn_changes, scale.churn_secs, &mut report);
    phase("config churn", result, &mut report);
    println!("soak: kill -9 mid-transfer");
    let result = kill::run(&mut world, &mut report);
    phase("kill -9", result, &mut report);
    println!("soak: certificate rotation");
    let result = churn::rotation(&mut world, scale.rotation_secs, &mut report);
    phase("rotation", result, &mut report);
    drop(world);

    println!(
        "\n## cargo xtask soak{} ({:.0?}; load at start {}; {})\n",
        if args.short { " --short" } else { "" },
        started.elapsed(),
        load.trim(),
        binary.display()
    );
    print!("{}", report.table());
    let failed = report.failed_invariants();
    if !failed.is_empty() {
        bail!("invariants failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Raises this process's open-file limit to [`NOFILE`] (soft and hard) where it may, else the
/// soft limit to the hard one; returns the limit in force and whether it is [`NOFILE`].
fn raise_nofile() -> Result<(u64, bool)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with valid pointers to locals.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
        }
        let raised = NOFILE.max(limit.rlim_max);
        let wanted = libc::rlimit {
            rlim_cur: raised,
            rlim_max: raised,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
            return Ok((raised, true));
        }
        // Without CAP_SYS_RESOURCE the hard limit is the ceiling.
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return Err(std::io::Error::last_os_error()).context("raising RLIMIT_NOFILE");
        }
    }
    Ok((limit.rlim_cur, false))
}

/// The burst size the open-file limit allows: each connection costs each agent two
/// descriptors, and an agent at its limit spins on `accept` (issue 12), which would bury the
/// figures, so a burst that does not fit is shrunk and the table says so.
fn fitting_burst(wanted: usize, nofile: u64, report: &mut Report) -> usize {
    let fits = (nofile.saturating_sub(FD_RESERVE) / 2) as usize;
    if wanted <= fits {
        return wanted;
    }
    report.figure(
        "burst size",
        format!(
            "{fits} instead of {wanted}: {wanted} need {} descriptors per agent, the limit is {nofile}",
            wanted * 2 + FD_RESERVE as usize
        ),
    );
    fits
}

/// How long descriptors may take to come back: idle pooled connections close after 30 s
/// (`proxy::pooled::pool::IDLE_TIMEOUT`), and a probe racing a stream's return to the pool can
/// leave one more than the baseline had.
const SETTLE: Duration = Duration::from_secs(50);

/// Waits up to [`SETTLE`] until every agent has no more descriptors open than at its baseline;
/// returns their usage then and how long it took (`None`: not within the limit).
fn settle_fds(agents: &[&SoakAgent], baseline: &[Usage]) -> Result<(Vec<Usage>, Option<Duration>)> {
    let started = Instant::now();
    loop {
        let now: Vec<Usage> = agents.iter().map(|a| a.usage()).collect::<Result<_>>()?;
        if now.iter().zip(baseline).all(|(n, b)| n.fds <= b.fds) {
            return Ok((now, Some(started.elapsed())));
        }
        if started.elapsed() > SETTLE {
            return Ok((now, None));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `13.5 → 362.0 → 243.0 MB` per agent (before, during or peak, after).
fn usage_line(rss: &[(f64, f64, f64)]) -> String {
    let one = |(before, peak, after): &(f64, f64, f64)| {
        format!("{before:.1} → {peak:.1} → {after:.1} MB")
    };
    match rss {
        [single] => one(single),
        many => many
            .iter()
            .enumerate()
            .map(|(i, r)| format!("n{} {}", i + 1, one(r)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}
