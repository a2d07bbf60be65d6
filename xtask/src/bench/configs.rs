//! The configurations compared, and how each one's proxies are started before its block of runs
//! and stopped after it.
use std::path::Path;

use anyhow::{Context as _, Result, bail};

use super::agents::RunningAgent;
use super::certs::{self, PairCerts};
use super::haproxy::HaproxyPair;
use super::topology::{NAMESPACE, Topology};
use super::workloads::Targets;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Config {
    /// The same pods with no agent running: the baseline of every ratio.
    Direct,
    /// Both agents, plaintext between them (`--auto-mtls false`).
    SockmeshDisable,
    /// Both agents, default auto mTLS (ISTIO_MUTUAL) between the two in-mesh pods.
    SockmeshMtls,
    /// The reference HAProxy pair with mTLS from the mesh CA.
    HaproxyMtls,
    /// The reference HAProxy pair as a plain TCP relay.
    HaproxyPlain,
}

impl Config {
    pub const ALL: [Config; 5] = [
        Config::Direct,
        Config::SockmeshDisable,
        Config::SockmeshMtls,
        Config::HaproxyMtls,
        Config::HaproxyPlain,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Config::Direct => "direct",
            Config::SockmeshDisable => "sockmesh DISABLE",
            Config::SockmeshMtls => "sockmesh ISTIO_MUTUAL",
            Config::HaproxyMtls => "HAProxy mTLS pair",
            Config::HaproxyPlain => "HAProxy plain relay",
        }
    }

    pub fn is_sockmesh(self) -> bool {
        matches!(self, Config::SockmeshDisable | Config::SockmeshMtls)
    }
}

/// What the block needs besides the topology: the agent binary and its extra flags.
pub struct Setup<'a> {
    pub binary: &'a Path,
    pub agent_flags: &'a [String],
    pub workloads: Vec<super::workloads::Workload>,
    /// Where per-run `perf` profiles go, when asked for.
    pub profile: Option<std::path::PathBuf>,
}

/// The running proxies of one block; dropping them stops them.
pub enum Proxies {
    None,
    Agents(Box<[RunningAgent; 2]>),
    Haproxy(HaproxyPair),
}

impl Proxies {
    pub fn start(config: Config, topology: &Topology, setup: &Setup<'_>) -> Result<Proxies> {
        Ok(match config {
            Config::Direct => Proxies::None,
            Config::SockmeshDisable | Config::SockmeshMtls => {
                let mut flags = setup.agent_flags.to_vec();
                if config == Config::SockmeshDisable {
                    flags.extend(["--auto-mtls".to_owned(), "false".to_owned()]);
                }
                let config_dir = topology.config_dir();
                let [n1, n2] = &topology.nodes;
                let agents = [
                    RunningAgent::start(setup.binary, n1, &config_dir, &flags)?,
                    RunningAgent::start(setup.binary, n2, &config_dir, &flags)?,
                ];
                for agent in &agents {
                    agent.wait_enrolled(1, std::time::Duration::from_secs(10))?;
                }
                Proxies::Agents(Box::new(agents))
            }
            Config::HaproxyMtls => {
                let certs = pair_certs(topology)?;
                let dir = topology.bed.workdir().join("haproxy-mtls");
                HaproxyPair::start(&topology.client, &topology.server, Some(&certs), &dir)
                    .map(Proxies::Haproxy)?
            }
            Config::HaproxyPlain => {
                let dir = topology.bed.workdir().join("haproxy-plain");
                HaproxyPair::start(&topology.client, &topology.server, None, &dir)
                    .map(Proxies::Haproxy)?
            }
        })
    }

    /// Where the client sends its traffic: the server pod itself (captured or not), or the
    /// local HAProxy.
    pub fn targets(&self, topology: &Topology) -> Targets {
        match self {
            Proxies::Haproxy(pair) => pair.targets,
            _ => Targets {
                http: topology.server.v4(80),
                iperf: topology.server.v4(5201),
            },
        }
    }

    /// Client-side then server-side proxy process.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Proxies::None => Vec::new(),
            Proxies::Agents(agents) => agents.iter().map(RunningAgent::pid).collect(),
            Proxies::Haproxy(pair) => pair.pids().to_vec(),
        }
    }

    /// Proves the block measures what it claims: the server-side agent must count mutual TLS
    /// connections exactly when the configuration is ISTIO_MUTUAL.
    pub fn verify(&self, config: Config) -> Result<()> {
        let Proxies::Agents(agents) = self else {
            return Ok(());
        };
        let scrape = agents[1]
            .scrape()
            .context("scraping the server-side agent")?;
        let mutual = scrape.contains("connection_security_policy=\"mutual_tls\"");
        match (config, mutual) {
            (Config::SockmeshMtls, false) => {
                bail!(
                    "{}: the server-side agent counted no mutual_tls connection",
                    config.title()
                )
            }
            (Config::SockmeshDisable, true) => {
                bail!(
                    "{}: the server-side agent counted mutual_tls connections",
                    config.title()
                )
            }
            _ => Ok(()),
        }
    }

    /// Both agents' pin directories by node name, for the BPF counters.
    pub fn pin_dirs<'a>(&self, topology: &'a Topology) -> Vec<(&'a str, &'a Path)> {
        match self {
            Proxies::Agents(_) => topology
                .nodes
                .iter()
                .map(|node| (node.name(), node.pin_dir()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Logs of the proxies, for an error that says why traffic did not pass.
    pub fn logs(&self) -> String {
        match self {
            Proxies::None => String::new(),
            Proxies::Agents(agents) => agents
                .iter()
                .map(RunningAgent::log)
                .collect::<Vec<_>>()
                .join("\n"),
            Proxies::Haproxy(pair) => pair.logs(),
        }
    }
}

/// Leaf certificates for the pods' identities, from the CA the agents created in the bed.
fn pair_certs(topology: &Topology) -> Result<PairCerts> {
    let ca_dir = topology.nodes[0].ca_dir();
    let spiffe = |name: &str| format!("spiffe://cluster.local/ns/{NAMESPACE}/sa/{name}");
    certs::issue(
        &ca_dir,
        &topology.bed.workdir().join("haproxy-certs"),
        &spiffe(topology.client.name()),
        &spiffe(topology.server.name()),
    )
}
