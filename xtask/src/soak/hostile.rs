//! Hostile clients against the STRICT port, from a pod outside the mesh, counted where it
//! matters: at the application. Nothing may reach it but the control rows' valid mesh
//! certificate (which must, or the zeros would prove nothing). Every TLS kind runs on both
//! inbound paths: a connection of its own (Istio's ALPN) and a stream on a pooled connection.
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::certs;
use super::pod::Attack;
use super::report::Report;
use super::world::{STRICT_PORT, World, tool};

/// Time for the agent's upstream connection of the last attempt to reach the app.
const ARRIVAL: Duration = Duration::from_millis(500);

pub fn run(world: &World, attempts: usize, report: &mut Report) -> Result<()> {
    let dir = world.bed.workdir().join("attack-certs");
    certs::write(&world.nodes[0].ca_dir(), &dir)?;
    let paths = Attack::ALL.into_iter().map(|kind| (kind, false)).chain(
        Attack::ALL
            .into_iter()
            .filter(|k| k.uses_tls())
            .map(|kind| (kind, true)),
    );
    for (kind, pooled) in paths {
        let path = if pooled { " (pooled)" } else { "" };
        let id = format!("strict/{}{path}", kind.id());
        match attack(world, kind, attempts, &dir, pooled) {
            Ok((reached, _)) if kind == Attack::MeshCert => report.assert(
                &format!("{id}, control"),
                format!("{reached} of {attempts} reached the app"),
                &format!("{attempts}"),
                reached == attempts,
            ),
            Ok((reached, handshakes)) => {
                let tls = if kind.uses_tls() {
                    format!(" ({handshakes} TLS handshakes completed client-side)")
                } else {
                    String::new()
                };
                report.assert(
                    &id,
                    format!("{reached} of {attempts} reached the app{tls}"),
                    "0",
                    reached == 0,
                );
            }
            Err(error) => report.broken(&id, &error),
        }
    }
    Ok(())
}

/// Runs `attempts` attacks of `kind` (on the pooled path: `pooled`); returns how many reached
/// the app and how many TLS handshakes the attacker saw complete.
fn attack(
    world: &World,
    kind: Attack,
    attempts: usize,
    dir: &std::path::Path,
    pooled: bool,
) -> Result<(usize, u64)> {
    let before = world.app_accepts(STRICT_PORT);
    let (addr, count, dir) = (
        world.strict_addr().to_string(),
        attempts.to_string(),
        dir.display().to_string(),
    );
    let mut args = vec![
        "attack",
        &addr,
        "--kind",
        kind.id(),
        &count,
        "--cert-dir",
        &dir,
    ];
    if pooled {
        args.push("--pooled");
    }
    let cmd = tool(&args)?;
    // Refusals are fast; the limit only bounds a run where every attempt times out.
    let limit = Duration::from_secs(60) + Duration::from_millis(50) * attempts as u32;
    let out = world.attacker.run_timeout(cmd, limit)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .with_context(|| {
            format!(
                "attack {} printed {text:?}; stderr: {}",
                kind.id(),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    std::thread::sleep(ARRIVAL);
    let reached = world.app_accepts(STRICT_PORT) - before;
    Ok((reached, summary["handshakes"].as_u64().unwrap_or(0)))
}
