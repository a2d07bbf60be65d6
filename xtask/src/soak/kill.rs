//! `kill -9` of one agent in the middle of a download, restarted at once (as a DaemonSet's pod
//! would be): how each application saw the stream end (an abnormal end must be a reset, not a
//! clean EOF), what new connections got while the agent was down, and how long until they work.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::pod::unix_ms;
use super::report::Report;
use super::traffic::{Attempt, Probe, Summary};
use super::world::{World, tool};

/// Probing before the kill, and long enough after it for the restart and recovery.
const PROBE_SECS: f64 = 10.0;
const BEFORE_KILL: Duration = Duration::from_secs(1);
/// A connection that worked but took longer than this waited for the agent (SYN retransmit).
const DELAYED_MS: u64 = 500;

pub fn run(world: &mut World, report: &mut Report) -> Result<()> {
    for (index, who) in [(1, "server agent (n2)"), (0, "client agent (n1)")] {
        let id = format!("kill -9 {who}");
        if let Err(error) = kill_one(world, index, &id, report) {
            report.broken(&id, &error);
            if world.agents[index].is_none() {
                world.start_agent(index, &[])?;
            }
        }
    }
    Ok(())
}

fn kill_one(world: &mut World, index: usize, id: &str, report: &mut Report) -> Result<()> {
    let ends_before = world.app_download_ends().len();
    let mut download = world
        .client
        .spawn(tool(&["download", &world.mesh_addr().to_string()])?)?;
    download.wait_for_log("receiving", Duration::from_secs(10))?;
    let probe = Probe::start(&world.client, world.mesh_addr(), PROBE_SECS, false)?;
    std::thread::sleep(BEFORE_KILL);
    let agent = world.agents[index].take().context("agent not running")?;
    let killed_ms = unix_ms();
    agent.kill()?;
    let restart = Instant::now();
    world.start_agent(index, &[])?;
    let ready_after = restart.elapsed();
    download
        .wait_timeout(Duration::from_secs(20))?
        .context("the download did not end after the kill")?;
    let client_end: Value = serde_json::from_str(download.log().lines().last().unwrap_or_default())
        .context("download printed no end")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while world.app_download_ends().len() <= ends_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let server_end = world
        .app_download_ends()
        .get(ends_before)
        .cloned()
        .unwrap_or_else(|| "still streaming".to_owned());
    let attempts = probe.finish()?;

    let client_end_kind = client_end["end"].as_str().unwrap_or("?");
    let mb = client_end["bytes"].as_f64().unwrap_or(0.0) / 1e6;
    report.target(
        &format!("{id}: how the apps saw the download end"),
        format!("client app: {client_end_kind} after {mb:.0} MB; server app: {server_end}"),
        "reset, reset",
        client_end_kind == "reset" && server_end == "reset",
    );
    let after: Vec<Attempt> = attempts
        .into_iter()
        .filter(|a| a.end_ms() >= killed_ms)
        .collect();
    let recovered = after
        .iter()
        .find(|a| a.ok())
        .map(|a| a.end_ms() - killed_ms);
    let summary = Summary::of(&after);
    let delayed = after
        .iter()
        .filter(|a| a.ok() && a.us / 1000 > DELAYED_MS)
        .count();
    report.figure(
        &format!("{id}: new connections from the kill on"),
        format!(
            "{summary}; {delayed} delayed > {DELAYED_MS} ms; working again {} after the kill (new agent ready after {:.1} s)",
            recovered.map_or("never".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
            ready_after.as_secs_f64(),
        ),
    );
    Ok(())
}
