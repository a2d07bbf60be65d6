//! Change under traffic: K policy rewrites while a mesh client keeps opening connections, and
//! workload certificates rotating every few seconds under new and held connections.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::Value;

use super::report::Report;
use super::traffic::{Probe, Summary};
use super::world::{World, policy};

/// Lifetime of workload certificates in the rotation phase: renewed at half-life, every 3 s.
const CERT_TTL: &str = "6s";
const RELOADS: &str = "sockmesh_config_reloads_total";

pub fn config(world: &World, changes: usize, secs: f64, report: &mut Report) -> Result<()> {
    let agents = [world.agent(0)?, world.agent(1)?];
    let reloads = || -> Result<Vec<f64>> {
        agents
            .iter()
            .map(|a| a.counter(RELOADS, "success"))
            .collect()
    };
    let before = reloads()?;
    let probe = Probe::start(&world.client, world.mesh_addr(), secs + 2.0, false)?;
    let gap = Duration::from_secs_f64(secs / changes as f64);
    let started = Instant::now();
    for variant in 1..=changes {
        world.write_policy(&policy(variant))?;
        std::thread::sleep(gap);
    }
    let took = started.elapsed();
    let summary = Summary::of(&probe.finish()?);
    world.write_policy(&policy(0))?;
    let after = reloads()?;
    report.target(
        &format!("config churn: {changes} policy changes"),
        format!(
            "in {took:.1?}, reloads applied n1 {}, n2 {}; new connections {summary}",
            after[0] - before[0],
            after[1] - before[1]
        ),
        "0 failed",
        summary.failures() == 0 && summary.ok > 0,
    );
    Ok(())
}

pub fn rotation(world: &mut World, secs: f64, report: &mut Report) -> Result<()> {
    world.stop_agents()?;
    world.start_agents(&["--cert-ttl", CERT_TTL])?;
    let fresh = Probe::start(&world.client, world.mesh_addr(), secs, false)?;
    let held = Probe::start(&world.client, world.mesh_addr(), secs, true)?;
    let mut serials = BTreeSet::new();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        for index in 0..2 {
            let certs: Value = serde_json::from_str(&world.agent(index)?.admin("/certs")?)?;
            for cert in certs.as_array().into_iter().flatten() {
                serials.insert((index, cert["serial"].to_string()));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let (fresh, held) = (Summary::of(&fresh.finish()?), Summary::of(&held.finish()?));
    let issued = |index| serials.iter().filter(|(i, _)| *i == index).count();
    report.target(
        &format!("certificate rotation ({CERT_TTL} TTL) under traffic"),
        format!(
            "{} certificates seen on n1, {} on n2 in {secs} s; new connections {fresh}; one held connection {held}",
            issued(0),
            issued(1)
        ),
        "0 failed",
        fresh.failures() == 0 && held.failures() == 0 && fresh.ok > 0 && held.ok > 0,
    );
    report.figure(
        "mesh root CA rotation",
        "not measured: the agent reads --ca-dir once at start; only workload certificates rotate"
            .to_owned(),
    );
    Ok(())
}
