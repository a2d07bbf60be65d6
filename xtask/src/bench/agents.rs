//! One sockmesh agent per node for a block of runs: started before it, stopped and uninstalled
//! after it, so the other configurations run with no BPF program attached and no proxy running.
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use testbed::{AgentPorts, Node, Process, node_command};

use crate::cmd::Cmd;

const READY: &str = "agent ready";
const ENROLLED: &str = "pod enrolled";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts `sockmesh run` for `node` like the test bed's agents (own cgroup, pins, loopback
/// ports of set 0, the bed's shared CA), but with info logging, no access log and a 1 s drain
/// (measured runs end with nothing to drain). Waits until its first reconcile is done.
pub fn start_quiet<S: AsRef<OsStr>>(
    binary: &Path,
    node: &Node,
    config: &Path,
    extra: &[S],
) -> Result<(Process, AgentPorts)> {
    let ports = AgentPorts::of(node, 0)?;
    let mut cmd = node_command(binary, node, config, &ports);
    cmd.args(["--access-log", "off", "--drain-timeout", "1s"])
        .args(extra)
        .env("RUST_LOG", "sockmesh_agent=info")
        .env("RUST_BACKTRACE", "0");
    let mut process = node.spawn_agent(cmd)?;
    process
        .wait_for_log(READY, START_TIMEOUT)
        .with_context(|| format!("agent of node {} did not start", node.name()))?;
    Ok((process, ports))
}

/// A running agent and what it needs to be measured and removed.
pub struct RunningAgent {
    process: Option<Process>,
    pin_dir: PathBuf,
    binary: PathBuf,
    pub metrics: SocketAddr,
}

impl RunningAgent {
    /// Starts `sockmesh run` for `node` with [`start_quiet`]: the benchmark measures
    /// forwarding, not log writing.
    pub fn start(binary: &Path, node: &Node, config: &Path, extra: &[String]) -> Result<Self> {
        let (process, ports) = start_quiet(binary, node, config, extra)?;
        Ok(RunningAgent {
            process: Some(process),
            pin_dir: node.pin_dir().to_owned(),
            binary: binary.to_owned(),
            metrics: ports.metrics,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, Process::pid)
    }

    pub fn log(&self) -> String {
        self.process.as_ref().map(Process::log).unwrap_or_default()
    }

    /// Waits until the agent has logged `count` enrollments.
    pub fn wait_enrolled(&self, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.log().matches(ENROLLED).count();
            if seen >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "only {seen} of {count} pods enrolled after {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The Prometheus scrape, read from the root netns where the agent listens.
    pub fn scrape(&self) -> Result<String> {
        Cmd::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://{}/metrics", self.metrics))
            .read()
    }

    /// SIGTERM, then `sockmesh uninstall`: the pinned links go, so no program stays attached.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(process) = self.process.take() {
            process.stop(Duration::from_secs(10))?;
        }
        if self.pin_dir.exists() {
            Cmd::new(&self.binary)
                .arg("uninstall")
                .arg("--pin-dir")
                .arg(&self.pin_dir)
                .read()?;
        }
        Ok(())
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            eprintln!("bench: stopping the agent failed: {error:#}");
        }
    }
}
