//! Many concurrent mesh connections from the client pod to the application: both agents' memory
//! and descriptors during and after, memory per connection, and the client node's capture map
//! entries, which must all come back once the connections close.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::agent::Usage;
use super::report::Report;
use super::world::{World, tool};
use super::{SETTLE, settle_fds, usage_line};

/// Capture maps with one entry per connection in flight (on the client's node).
const MAPS: [&str; 2] = ["CONNS", "PENDING"];

pub fn run(world: &World, conns: usize, hold_secs: f64, report: &mut Report) -> Result<()> {
    let agents = [world.agent(0)?, world.agent(1)?];
    let baseline: Vec<Usage> = agents.iter().map(|a| a.usage()).collect::<Result<_>>()?;
    let maps_before = map_counts(world)?;
    let mut many = world.client.spawn(tool(&[
        "many",
        &world.mesh_addr().to_string(),
        &conns.to_string(),
        "--hold-secs",
        &hold_secs.to_string(),
    ])?)?;
    let open_limit = Duration::from_secs(60) + Duration::from_millis(20) * conns as u32;
    many.wait_for_log("\"open\"", open_limit)?;
    std::thread::sleep(Duration::from_secs(1));
    let during: Vec<Usage> = agents.iter().map(|a| a.usage()).collect::<Result<_>>()?;
    let maps_during = map_counts(world)?;
    many.wait_for_log("\"closed\"", Duration::from_secs_f64(hold_secs + 30.0))?;
    let closed_at = Instant::now();
    let opened: Value = many
        .log()
        .lines()
        .find_map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v["open"].is_u64())
        })
        .context("many printed no \"open\" line")?;
    let open = opened["open"].as_u64().unwrap_or(0) as usize;
    let (after, settled) = settle_fds(&agents, &baseline)?;
    let mut maps_after = map_counts(world)?;
    while maps_after.iter().zip(&maps_before).any(|(a, b)| a > b) && closed_at.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_secs(1));
        maps_after = map_counts(world)?;
    }

    report.target(
        &format!("burst/{conns}: opened"),
        format!("{open} of {conns}, failed {}", opened["failed"]),
        &format!("{conns}"),
        open == conns,
    );
    let rss: Vec<(f64, f64, f64)> = (0..2)
        .map(|i| (baseline[i].rss_mb, during[i].rss_mb, after[i].rss_mb))
        .collect();
    report.target(
        &format!("burst/{conns}: agent RSS"),
        usage_line(&rss),
        "after ≤ before + 10 MB",
        rss.iter().all(|(before, _, after)| *after <= before + 10.0),
    );
    let per_conn: Vec<String> = (0..2)
        .map(|i| {
            let kib = (during[i].rss_mb - baseline[i].rss_mb) * 1e6 / 1024.0 / open.max(1) as f64;
            format!("n{} {kib:.1} KiB", i + 1)
        })
        .collect();
    report.figure(
        &format!("burst/{conns}: memory per connection"),
        per_conn.join(", "),
    );
    let fds: Vec<String> = (0..2)
        .map(|i| {
            format!(
                "n{} {} → {} → {}",
                i + 1,
                baseline[i].fds,
                during[i].fds,
                after[i].fds
            )
        })
        .collect();
    report.assert(
        &format!("burst/{conns}: agent fds back to baseline"),
        format!(
            "{}{}",
            fds.join("; "),
            settled.map_or(String::new(), |s| format!(
                " (after {:.0} s)",
                s.as_secs_f64()
            ))
        ),
        "after ≤ before",
        (0..2).all(|i| after[i].fds <= baseline[i].fds),
    );
    let maps: Vec<String> = MAPS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                "{name} {} → {} → {}",
                maps_before[i], maps_during[i], maps_after[i]
            )
        })
        .collect();
    report.assert(
        &format!("burst/{conns}: n1 capture map entries back to baseline"),
        maps.join("; "),
        "after ≤ before",
        maps_after.iter().zip(&maps_before).all(|(a, b)| a <= b),
    );
    Ok(())
}

fn map_counts(world: &World) -> Result<Vec<usize>> {
    MAPS.iter().map(|m| world.map_entries(0, m)).collect()
}
