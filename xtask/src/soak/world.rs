//! The soak's world on one test bed: node n1 with the legitimate mesh client and an attacker
//! outside the mesh, node n2 with the application (STRICT on two ports, PERMISSIVE on one),
//! an agent on each node. Dropping it stops everything and the bed removes namespaces, cgroups
//! and pins, also when a phase failed.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use testbed::{Node, Pod, PodOptions, Process, TestBed};

use super::agent::SoakAgent;

pub const MESH_NAMESPACE: &str = "soak";
const OUTSIDE_NAMESPACE: &str = "outside";
/// STRICT, and only attackers connect to it: what reaches the app here is what got past.
pub const STRICT_PORT: u16 = 8000;
pub const PERMISSIVE_PORT: u16 = 8001;
/// STRICT too; the legitimate mesh client's port, so its connections are never counted as an
/// attacker's.
pub const MESH_PORT: u16 = 8002;
/// The policy file the soak owns in the agents' configuration directory.
const POLICY_FILE: &str = "soak-policy.yaml";
/// Enough ephemeral ports and backlog for 10,000 connections per pod.
const POD_SYSCTLS: &[&str] = &[
    "net.ipv4.ip_local_port_range=1024 65000",
    "net.core.somaxconn=8192",
    "net.ipv4.tcp_max_syn_backlog=8192",
];

/// The policy: STRICT for the application's workload, PERMISSIVE on one port. `variant` changes
/// what the churn phase changes (a port's mode and a DestinationRule), never what lets mesh
/// traffic to [`MESH_PORT`] through.
pub fn policy(variant: usize) -> String {
    let other_port_mode = if variant.is_multiple_of(2) {
        "PERMISSIVE"
    } else {
        "STRICT"
    };
    let mut yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: server\n  namespace: {MESH_NAMESPACE}\n  annotations: {{soak/variant: \"{variant}\"}}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n  mtls: {{mode: STRICT}}\n  portLevelMtls:\n    {PERMISSIVE_PORT}: {{mode: {other_port_mode}}}\n"
    );
    if variant % 3 == 1 {
        yaml.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: server\n  namespace: {MESH_NAMESPACE}\nspec:\n  host: server.{MESH_NAMESPACE}.svc.cluster.local\n  trafficPolicy:\n    tls: {{mode: ISTIO_MUTUAL}}\n"
        ));
    }
    yaml
}

pub struct World {
    /// The agents of n1 and n2; `None` between a kill and the restart.
    pub agents: [Option<SoakAgent>; 2],
    app: Process,
    pub client: Pod,
    pub attacker: Pod,
    pub server: Pod,
    pub nodes: [Node; 2],
    pub bed: TestBed,
    binary: PathBuf,
}

impl World {
    pub fn build(binary: &Path) -> Result<World> {
        let bed = TestBed::new("soak")?;
        let nodes = [bed.node("n1")?, bed.node("n2")?];
        bed.label_namespace(MESH_NAMESPACE, "sockmesh.io/capture", "enabled");
        let client = nodes[0].pod(MESH_NAMESPACE, "client")?;
        let attacker = nodes[0].pod(OUTSIDE_NAMESPACE, "attacker")?;
        let server = nodes[1].pod_with(
            MESH_NAMESPACE,
            "server",
            PodOptions::new().label("app", "server"),
        )?;
        for pod in [&client, &attacker, &server] {
            let mut cmd = Command::new("sysctl");
            cmd.arg("-q").arg("-w").args(POD_SYSCTLS);
            let out = pod.run(cmd)?;
            if !out.status.success() {
                bail!("sysctl: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        let mut app = server.spawn(tool(&[
            "app",
            "--ports",
            &format!("{STRICT_PORT},{PERMISSIVE_PORT},{MESH_PORT}"),
        ])?)?;
        app.wait_for_log("listening", Duration::from_secs(10))?;
        let config = bed.write_config()?;
        std::fs::write(config.join(POLICY_FILE), policy(0))?;
        let mut world = World {
            agents: [None, None],
            app,
            client,
            attacker,
            server,
            nodes,
            bed,
            binary: binary.to_owned(),
        };
        world.start_agents(&[])?;
        Ok(world)
    }

    pub fn config_dir(&self) -> PathBuf {
        self.bed.config_dir()
    }

    /// Replaces the soak's policy file atomically (the agents watch the directory).
    pub fn write_policy(&self, yaml: &str) -> Result<()> {
        let path = self.config_dir().join(POLICY_FILE);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Starts the agent of node `index` (0: n1, 1: n2) with `extra` flags.
    pub fn start_agent(&mut self, index: usize, extra: &[&str]) -> Result<()> {
        let agent = SoakAgent::start(&self.binary, &self.nodes[index], &self.config_dir(), extra)?;
        self.agents[index] = Some(agent);
        Ok(())
    }

    pub fn start_agents(&mut self, extra: &[&str]) -> Result<()> {
        (0..2).try_for_each(|i| self.start_agent(i, extra))
    }

    /// SIGTERM to both agents (for a restart with other flags).
    pub fn stop_agents(&mut self) -> Result<()> {
        for agent in self.agents.iter_mut().filter_map(Option::take) {
            agent.stop()?;
        }
        Ok(())
    }

    pub fn agent(&self, index: usize) -> Result<&SoakAgent> {
        self.agents[index]
            .as_ref()
            .with_context(|| format!("the agent of {} is not running", self.nodes[index].name()))
    }

    /// Connections the application accepted so far on `port`.
    pub fn app_accepts(&self, port: u16) -> usize {
        app_lines(&self.app)
            .filter(|line| line["accept"].as_u64() == Some(u64::from(port)))
            .count()
    }

    /// How the application saw its download streams end, in order.
    pub fn app_download_ends(&self) -> Vec<String> {
        app_lines(&self.app)
            .filter_map(|line| line["download_end"].as_str().map(str::to_owned))
            .collect()
    }

    pub fn strict_addr(&self) -> SocketAddr {
        self.server.v4(STRICT_PORT)
    }

    /// Where the legitimate mesh client connects.
    pub fn mesh_addr(&self) -> SocketAddr {
        self.server.v4(MESH_PORT)
    }

    /// Entries of a pinned capture map on node `index`.
    pub fn map_entries(&self, index: usize, map: &str) -> Result<usize> {
        Ok(testbed::bpf::map_dump(self.nodes[index].pin_dir(), map)?.len())
    }
}

fn app_lines(app: &Process) -> impl Iterator<Item = Value> {
    app.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect::<Vec<_>>()
        .into_iter()
}

/// `xtask soak-pod <args>`: this binary, as a program for a pod.
pub fn tool(args: &[&str]) -> Result<Command> {
    let exe = std::env::current_exe().context("current_exe")?;
    // Cargo replaces target/debug/xtask when a workspace build (the tests', the agent's) links
    // it again while this one runs; /proc/self/exe then names the old file "... (deleted)",
    // and the path holds the same source built anew.
    let exe = match exe.to_str().and_then(|p| p.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => exe,
    };
    let mut cmd = Command::new(exe);
    cmd.arg("soak-pod").args(args);
    Ok(cmd)
}
