//! One node's agent as the soak runs it, what the soak reads of it (/proc, metrics, admin API),
//! and the two ways it ends: SIGTERM and SIGKILL.
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use nix::sys::signal::Signal;
use testbed::{AgentPorts, Node, Process};

use crate::bench::{agents, measure};
use crate::cmd::Cmd;

pub struct SoakAgent {
    process: Process,
    ports: AgentPorts,
}

/// What the soak reads of an agent process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub fds: usize,
    pub rss_mb: f64,
}

impl SoakAgent {
    /// Starts `sockmesh run` for `node` as the benchmark does (info logging, no access log:
    /// 10,000 connections are measured, not logged).
    pub fn start(binary: &Path, node: &Node, config: &Path, extra: &[&str]) -> Result<Self> {
        let (process, ports) = agents::start_quiet(binary, node, config, extra)?;
        Ok(SoakAgent { process, ports })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Open descriptors and resident memory now.
    pub fn usage(&self) -> Result<Usage> {
        let dir = format!("/proc/{}/fd", self.pid());
        let fds = fs::read_dir(&dir)
            .with_context(|| format!("reading {dir}"))?
            .count();
        Ok(Usage {
            fds,
            rss_mb: measure::memory(self.pid())?.rss_mb,
        })
    }

    /// The agent's soft limit on open files, as the kernel applies it.
    pub fn fd_limit(&self) -> Result<String> {
        let limits = fs::read_to_string(format!("/proc/{}/limits", self.pid()))?;
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .map(str::to_owned)
            .context("no open-files line in /proc/<pid>/limits")
    }

    /// Sum of a counter family's samples whose labels contain `filter`.
    pub fn counter(&self, family: &str, filter: &str) -> Result<f64> {
        let text = Cmd::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://{}/metrics", self.ports.metrics))
            .read()?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(family) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// GET from the admin API.
    pub fn admin(&self, path: &str) -> Result<String> {
        Cmd::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://{}{path}", self.ports.admin))
            .read()
    }

    /// SIGTERM and drain; the pins stay for the next agent.
    pub fn stop(self) -> Result<()> {
        self.process.stop(Duration::from_secs(10))?;
        Ok(())
    }

    /// SIGKILL: a crash. The pins stay; the kernel closes the agent's sockets.
    pub fn kill(mut self) -> Result<()> {
        self.process.signal(Signal::SIGKILL)?;
        self.process.wait_timeout(Duration::from_secs(5))?;
        Ok(())
    }
}
