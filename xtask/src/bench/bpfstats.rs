//! How often the agents' BPF programs run per connection (a handful is the goal), read from
//! the kernel's own counters: `kernel.bpf_stats_enabled=1` makes `bpftool prog show` report
//! run_cnt and run_time_ns. Enabled only around the runs it measures, since it costs two clock
//! reads per program run.
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::cmd::Cmd;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled` set to 1; the previous value comes back on drop.
pub struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    pub fn new() -> Result<StatsEnabled> {
        let previous = fs::read_to_string(SYSCTL).with_context(|| format!("reading {SYSCTL}"))?;
        fs::write(SYSCTL, "1").with_context(|| format!("writing {SYSCTL}"))?;
        Ok(StatsEnabled {
            previous: previous.trim().to_owned(),
        })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(error) = fs::write(SYSCTL, &self.previous) {
            eprintln!(
                "bench: restoring {SYSCTL} to {} failed: {error}",
                self.previous
            );
        }
    }
}

/// Cumulative counters of one program.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Runs {
    pub count: f64,
    pub ns: f64,
}

/// Counters of every program an agent has linked (its pinned links), keyed `<node>/<program>`.
pub fn snapshot(agents: &[(&str, &Path)]) -> Result<BTreeMap<String, Runs>> {
    let mut out = BTreeMap::new();
    for (node, pin_dir) in agents {
        let links = pin_dir.join("v1/links");
        let mut prog_ids: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&links).with_context(|| format!("listing {}", links.display()))? {
            let link = bpftool(&[
                "link",
                "show",
                "pinned",
                &entry?.path().display().to_string(),
            ])?;
            if let Some(id) = link["prog_id"].as_u64() {
                prog_ids.push(id);
            }
        }
        // One sk_lookup program serves the links of every pod netns: count it once.
        prog_ids.sort_unstable();
        prog_ids.dedup();
        for id in prog_ids {
            let prog = bpftool(&["prog", "show", "id", &id.to_string()])?;
            let name = prog["name"].as_str().unwrap_or("?");
            let runs = out
                .entry(format!("{node}/{name}"))
                .or_insert_with(Runs::default);
            runs.count += prog["run_cnt"].as_f64().unwrap_or(0.0);
            runs.ns += prog["run_time_ns"].as_f64().unwrap_or(0.0);
        }
    }
    Ok(out)
}

/// Runs of each program between two snapshots, divided by `connections`: (runs, ns per run).
pub fn per_connection(
    before: &BTreeMap<String, Runs>,
    after: &BTreeMap<String, Runs>,
    connections: f64,
) -> BTreeMap<String, Runs> {
    after
        .iter()
        .map(|(key, end)| {
            let start = before.get(key).copied().unwrap_or_default();
            let count = end.count - start.count;
            let per_run = if count > 0.0 {
                (end.ns - start.ns) / count
            } else {
                0.0
            };
            (
                key.clone(),
                Runs {
                    count: count / connections.max(1.0),
                    ns: per_run,
                },
            )
        })
        .collect()
}

fn bpftool(args: &[&str]) -> Result<Value> {
    let text = Cmd::new("bpftool").arg("-j").args(args).read()?;
    serde_json::from_str(&text)
        .with_context(|| format!("bpftool {} printed no JSON", args.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_per_connection() {
        let before = BTreeMap::from([(
            "n1/connect4".to_owned(),
            Runs {
                count: 10.0,
                ns: 1000.0,
            },
        )]);
        let after = BTreeMap::from([
            (
                "n1/connect4".to_owned(),
                Runs {
                    count: 210.0,
                    ns: 21_000.0,
                },
            ),
            (
                "n2/sk_lookup".to_owned(),
                Runs {
                    count: 100.0,
                    ns: 5000.0,
                },
            ),
        ]);
        let per = per_connection(&before, &after, 100.0);
        assert_eq!(
            per["n1/connect4"],
            Runs {
                count: 2.0,
                ns: 100.0
            }
        );
        assert_eq!(
            per["n2/sk_lookup"],
            Runs {
                count: 1.0,
                ns: 50.0
            }
        );
    }
}
