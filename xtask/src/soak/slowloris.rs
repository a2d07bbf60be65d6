//! Slowloris from outside the mesh: many idle connections to a STRICT and to a PERMISSIVE port
//! of the server pod. What the server's agent holds (fds, memory) during and after, whether it
//! cuts the connections, and what a legitimate mesh client's latency does meanwhile.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::agent::Usage;
use super::report::Report;
use super::traffic::{Probe, Summary};
use super::world::{PERMISSIVE_PORT, STRICT_PORT, World, tool};
use super::{settle_fds, usage_line};

/// Index of the server node's agent, the one under attack.
const SERVER: usize = 1;
/// Legitimate probing before the attack, for the comparison.
const BASELINE_SECS: f64 = 2.0;

pub fn run(world: &World, conns: usize, secs: f64, report: &mut Report) -> Result<()> {
    for (mode, port) in [("strict", STRICT_PORT), ("permissive", PERMISSIVE_PORT)] {
        let id = format!("slowloris/{mode}");
        if let Err(error) = attack(world, &id, port, conns, secs, report) {
            report.broken(&id, &error);
        }
    }
    Ok(())
}

fn attack(
    world: &World,
    id: &str,
    port: u16,
    conns: usize,
    secs: f64,
    report: &mut Report,
) -> Result<()> {
    let agent = world.agent(SERVER)?;
    let before = Summary::of(
        &Probe::start(&world.client, world.mesh_addr(), BASELINE_SECS, false)?.finish()?,
    );
    // After the probe: the pooled connection it leaves idle is part of the baseline.
    let baseline = agent.usage()?;
    let accepts_before = world.app_accepts(port);
    let target = world.server.v4(port).to_string();
    let mut attacker = world.attacker.spawn(tool(&[
        "slowloris",
        &target,
        &conns.to_string(),
        "--secs",
        &secs.to_string(),
    ])?)?;
    attacker.wait_for_log("opened", Duration::from_secs(60))?;
    let probe = Probe::start(&world.client, world.mesh_addr(), secs - 1.0, false)?;
    let mut peak = baseline;
    let deadline = Instant::now() + Duration::from_secs_f64(secs + 30.0);
    while attacker.wait_timeout(Duration::from_millis(500))?.is_none() {
        let now = agent.usage()?;
        peak.fds = peak.fds.max(now.fds);
        peak.rss_mb = peak.rss_mb.max(now.rss_mb);
        anyhow::ensure!(Instant::now() < deadline, "slowloris did not end");
    }
    let during = Summary::of(&probe.finish()?);
    let log = attacker.log();
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let opened = lines
        .first()
        .and_then(|v| v["opened"].as_u64())
        .unwrap_or(0);
    let last = lines.last().context("slowloris printed nothing")?;
    let (cut, held) = (last["cut"].as_u64(), last["held"].as_u64());
    let (cut, held) = (cut.unwrap_or(0), held.unwrap_or(0));
    let reached = world.app_accepts(port) - accepts_before;
    let (after, settled) = settle_fds(&[agent], &[baseline])?;
    let after: Usage = after[0];

    if port == STRICT_PORT {
        report.assert(
            &format!("{id}: reached the app"),
            format!("{reached} of {opened}"),
            "0",
            reached == 0,
        );
    } else {
        report.figure(
            &format!("{id}: reached the app"),
            format!("{reached} of {opened} (plaintext is allowed here)"),
        );
    }
    let cut_at = last["cut_p50_ms"]
        .as_u64()
        .map_or(String::new(), |ms| format!(", median after {ms} ms"));
    let measured = format!("{cut} of {opened} cut{cut_at}; {held} still held after {secs} s");
    if port == STRICT_PORT {
        report.target(
            &format!("{id}: cut by the agent"),
            measured,
            "all cut (detection timeout)",
            opened > 0 && held == 0,
        );
    } else {
        // PERMISSIVE hands plaintext to the app, which owns the connection from then on; the
        // agent bounds what one source and all passthrough may hold, and closes idle ones at
        // `--idle-timeout` (1 h, as Istio's TCP idle timeout), so within the run they are held.
        report.figure(
            &format!("{id}: held (passthrough: bounded by --max-connections-per-source and --max-passthrough-connections, closed at --idle-timeout)"),
            measured,
        );
    }
    report.assert(
        &format!("{id}: server agent fds"),
        format!(
            "{} before, {} peak, {} after{}",
            baseline.fds,
            peak.fds,
            after.fds,
            settled.map_or(String::new(), |s| format!(
                " ({:.1} s after the attack)",
                s.as_secs_f64()
            ))
        ),
        "after ≤ before",
        after.fds <= baseline.fds,
    );
    report.figure(
        &format!("{id}: server agent RSS"),
        usage_line(&[(baseline.rss_mb, peak.rss_mb, after.rss_mb)]),
    );
    report.target(
        &format!("{id}: mesh latency, legitimate client"),
        format!(
            "before: {}; during: {}, {during}",
            before.latency(),
            during.latency()
        ),
        "0 failed during",
        during.failures() == 0 && during.ok > 0,
    );
    Ok(())
}
