//! Running a `sockmesh` agent for a node of the bed, scoped to the node's cgroup, pin directory and
//! ports so several agents (nodes) and several tests run side by side.
use std::{
    env,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::{Node, Process};

/// Environment override for the agent binary.
pub const SOCKMESH_BIN_ENV: &str = "SOCKMESH_BIN";
const READY: &str = "agent ready";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running agent. SIGKILLed on drop (pins stay until the bed drops: like a crash).
pub struct Agent {
    process: Process,
    node: Node,
    admin: SocketAddr,
    metrics: SocketAddr,
    readiness: SocketAddr,
    access_log: PathBuf,
}

impl Agent {
    /// Starts `sockmesh run` for `node` with the configuration directory `config`.
    pub fn start(node: &Node, config: &Path) -> Result<Agent> {
        Self::start_with(node, config, &[])
    }

    /// [`Agent::start`] with extra flags. Every node's agent gets its own admin, metrics and
    /// readiness ports on loopback, its own JSON access log, and the bed's shared CA directory
    /// (`<bed workdir>/ca`), so agents of one bed trust each other.
    pub fn start_with(node: &Node, config: &Path, extra: &[&str]) -> Result<Agent> {
        let mut agent = Self::launch(node, extra, |ports| {
            Ok(node_command(&sockmesh_bin()?, node, config, ports))
        })?;
        agent.process.wait_for_log(READY, START_TIMEOUT)?;
        Ok(agent)
    }

    /// Starts `sockmesh run --kubernetes` for a node of a [`crate::TestBed::kubernetes`] bed: the
    /// cluster state comes from the bed's API server (`KUBECONFIG`), pods are found in the node's
    /// kubelet cgroup layout. Returns once the API's first full list is applied.
    pub fn start_kubernetes(node: &Node, extra: &[&str]) -> Result<Agent> {
        let mut agent = Self::spawn_kubernetes(node, extra)?;
        agent.process.wait_for_log(READY, START_TIMEOUT)?;
        Ok(agent)
    }

    /// [`Agent::start_kubernetes`] without waiting for the agent to be ready (it waits for the
    /// API's first full list before it enrolls anything).
    pub fn spawn_kubernetes(node: &Node, extra: &[&str]) -> Result<Agent> {
        let kubeconfig = node.bed().api()?.kubeconfig().to_owned();
        Self::launch(node, extra, |ports| {
            Ok(kubernetes_command(
                &sockmesh_bin()?,
                node,
                &kubeconfig,
                ports,
            ))
        })
    }

    /// Starts the agent process with the bed's logging and access log; does not wait.
    fn launch(
        node: &Node,
        extra: &[&str],
        command: impl FnOnce(&AgentPorts) -> Result<Command>,
    ) -> Result<Agent> {
        // Alternate between two port sets per node, so a new agent can start beside the old one
        // (a rolling update) in the shared root netns.
        let set = next_port_set(node);
        let ports = AgentPorts::of(node, set)?;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let access_log = node
            .bed_workdir()
            .join(format!("access-{}.{seq}.jsonl", node.name()));
        let mut cmd = command(&ports)?;
        cmd.arg("--access-log")
            .arg(&access_log)
            .args(["--access-log-format", "json"])
            .args(extra)
            .env(
                "RUST_LOG",
                env::var("SOCKMESH_TEST_LOG").unwrap_or_else(|_| "sockmesh_agent=debug".into()),
            )
            .env("RUST_BACKTRACE", "0");
        let process = node.spawn_agent(cmd)?;
        Ok(Agent {
            process,
            node: node.clone(),
            admin: ports.admin,
            metrics: ports.metrics,
            readiness: ports.readiness,
            access_log,
        })
    }

    /// Admin API address (`sockmesh status --admin <addr>`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
    }

    pub fn readiness_addr(&self) -> SocketAddr {
        self.readiness
    }

    /// GET `path` from the admin API; the body as text.
    pub fn admin_get(&self, path: &str) -> Result<String> {
        http_get(self.admin, path)
    }

    /// The Prometheus scrape.
    pub fn scrape(&self) -> Result<String> {
        http_get(self.metrics, "/metrics")
    }

    /// The access log so far, one JSON object per closed connection.
    pub fn access_log(&self) -> Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("access log line {l:?}")))
            .collect()
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        self.process.wait_for_log(needle, timeout)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(self) -> Result<()> {
        let status = self.process.stop(Duration::from_secs(10))?;
        if !status.success() {
            bail!("agent exited with {status}");
        }
        Ok(())
    }

    /// Kills the agent without letting it clean up (a crash).
    pub fn kill(self) -> Result<()> {
        self.process.signal(Signal::SIGKILL)?;
        Ok(())
    }
}

/// Loopback addresses of one agent's admin, metrics and readiness servers.
#[derive(Clone, Copy, Debug)]
pub struct AgentPorts {
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub readiness: SocketAddr,
}

impl AgentPorts {
    /// Port set `set` (0 or 1) of the node's reserved block: two agents of one node (a rolling
    /// update) use different sets.
    pub fn of(node: &Node, set: u16) -> Result<Self> {
        let local = |k| -> Result<SocketAddr> {
            Ok(SocketAddr::from((
                [127, 0, 0, 1],
                node.local_port(set * 3 + k)?,
            )))
        };
        Ok(Self {
            admin: local(0)?,
            metrics: local(1)?,
            readiness: local(2)?,
        })
    }
}

/// `sockmesh run` scoped to `node`: its cgroup root, pin directory and ports, and the bed's shared
/// CA directory (`<bed workdir>/ca`), so agents of one bed trust each other. Callers add logging,
/// access-log and other flags.
pub fn node_command(binary: &Path, node: &Node, config: &Path, ports: &AgentPorts) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(["--node-name", node.name()])
        .arg("--cgroup-root")
        .arg(node.cgroup().path())
        .arg("--pin-dir")
        .arg(node.pin_dir())
        .arg("--ca-dir")
        .arg(node.ca_dir())
        .args(["--admin-addr", &ports.admin.to_string()])
        .args(["--metrics-addr", &ports.metrics.to_string()])
        .args(["--readiness-addr", &ports.readiness.to_string()]);
    cmd
}

/// `sockmesh run --kubernetes` for `node`: [`node_command`]'s scoping, with the cluster state
/// from the API server of `kubeconfig` and pods from the node's kubelet cgroups.
pub fn kubernetes_command(
    binary: &Path,
    node: &Node,
    kubeconfig: &Path,
    ports: &AgentPorts,
) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg("run")
        .arg("--kubernetes")
        .env("KUBECONFIG", kubeconfig)
        .args(["--node-name", node.name()])
        .arg("--cgroup-root")
        .arg(node.cgroup().path())
        .arg("--kubelet-cgroup-root")
        .arg(node.cgroup().rel().trim_start_matches('/'))
        .arg("--pin-dir")
        .arg(node.pin_dir())
        .arg("--ca-dir")
        .arg(node.ca_dir())
        .args(["--admin-addr", &ports.admin.to_string()])
        .args(["--metrics-addr", &ports.metrics.to_string()])
        .args(["--readiness-addr", &ports.readiness.to_string()]);
    cmd
}

fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let url = format!("http://{addr}{path}");
    let mut response = ureq::get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    Ok(response.body_mut().read_to_string()?)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn next_port_set(node: &Node) -> u16 {
    static SETS: Mutex<Vec<(String, u16)>> = Mutex::new(Vec::new());
    let key = format!("{}/{}", node.bed_workdir().display(), node.name());
    let mut sets = SETS.lock().unwrap_or_else(|e| e.into_inner());
    match sets.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => {
            *n = 1 - *n;
            *n
        }
        None => {
            sets.push((key, 0));
            0
        }
    }
}

/// Path of the `sockmesh` binary: `$SOCKMESH_BIN`, the target directory of the running test, or a
/// fresh workspace build into that target directory.
pub fn sockmesh_bin() -> Result<PathBuf> {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    static BUILD: Mutex<()> = Mutex::new(());
    if let Some(p) = PATH.get() {
        return Ok(p.clone());
    }
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = PATH.get() {
        return Ok(p.clone());
    }
    let path = match env::var_os(SOCKMESH_BIN_ENV) {
        Some(p) => PathBuf::from(p),
        None => build()?,
    };
    if !path.is_file() {
        bail!("sockmesh binary not found at {}", path.display());
    }
    Ok(PATH.get_or_init(|| path).clone())
}

/// Builds the agent with the profile and target directory of the running executable, so the test
/// always runs the current source (cargo makes this a no-op when it is up to date).
fn build() -> Result<PathBuf> {
    let exe = env::current_exe().context("current_exe")?;
    let mut profile_dir = exe.parent().context("exe has no parent")?.to_owned();
    if profile_dir.ends_with("deps") || profile_dir.ends_with("examples") {
        profile_dir.pop();
    }
    let target_dir = profile_dir.parent().context("no target dir")?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // The whole workspace, as `cargo test --workspace` builds it: the same feature set, so this
    // finds the binary up to date instead of rebuilding dependencies with other features.
    cmd.args([
        "build",
        "--quiet",
        "--workspace",
        "--exclude",
        "sockmesh-ebpf",
        "--bins",
        "--manifest-path",
    ])
    .arg(&manifest)
    .arg("--target-dir")
    .arg(target_dir);
    if profile_dir.ends_with("release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo to build sockmesh")?;
    if !status.success() {
        bail!("cargo build -p sockmesh-agent failed ({status})");
    }
    Ok(profile_dir.join("sockmesh"))
}
