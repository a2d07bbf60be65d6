//! Legitimate traffic while something happens: a probe process in the mesh client pod and what
//! its attempts add up to.
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Deserialize;
use testbed::{Pod, Process};

use super::report::quantile;
use super::world::tool;

/// One connection attempt (or one exchange, on a held connection).
#[derive(Debug, Clone, Deserialize)]
pub struct Attempt {
    pub start_ms: u128,
    pub us: u64,
    pub outcome: String,
}

impl Attempt {
    pub fn ok(&self) -> bool {
        self.outcome == "ok"
    }

    pub fn end_ms(&self) -> u128 {
        self.start_ms + u128::from(self.us / 1000)
    }
}

pub struct Probe {
    process: Process,
    secs: f64,
}

impl Probe {
    /// Starts probing `addr` from `pod` for `secs`: a new connection per attempt, or one held
    /// connection for all of them.
    pub fn start(pod: &Pod, addr: SocketAddr, secs: f64, same_connection: bool) -> Result<Probe> {
        let (addr, duration) = (addr.to_string(), secs.to_string());
        let mut args = vec!["probe", &addr, "--secs", &duration];
        if same_connection {
            args.push("--same-connection");
        }
        Ok(Probe {
            process: pod.spawn(tool(&args)?)?,
            secs,
        })
    }

    /// Waits for the probe to end and returns its attempts.
    pub fn finish(mut self) -> Result<Vec<Attempt>> {
        let limit = Duration::from_secs_f64(self.secs + 15.0);
        self.process
            .wait_timeout(limit)?
            .with_context(|| format!("probe still running after {limit:?}"))?;
        self.process
            .log()
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("probe line {l:?}")))
            .collect()
    }
}

/// Outcomes and latency of a set of attempts.
pub struct Summary {
    pub ok: usize,
    pub failed: BTreeMap<String, usize>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Summary {
    pub fn of(attempts: &[Attempt]) -> Summary {
        let mut ms: Vec<f64> = attempts
            .iter()
            .filter(|a| a.ok())
            .map(|a| a.us as f64 / 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let mut failed = BTreeMap::new();
        for attempt in attempts.iter().filter(|a| !a.ok()) {
            *failed.entry(attempt.outcome.clone()).or_default() += 1;
        }
        Summary {
            ok: ms.len(),
            failed,
            p50_ms: quantile(&ms, 0.5),
            p99_ms: quantile(&ms, 0.99),
        }
    }

    pub fn failures(&self) -> usize {
        self.failed.values().sum()
    }

    /// `p50 1.2 ms, p99 3.4 ms`.
    pub fn latency(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        format!("p50 {} ms, p99 {} ms", ms(self.p50_ms), ms(self.p99_ms))
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ok, {} failed", self.ok, self.failures())?;
        if !self.failed.is_empty() {
            let kinds: Vec<String> = self
                .failed
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            write!(f, " ({})", kinds.join(", "))?;
        }
        Ok(())
    }
}
