//! The seed article's topology on two nodes, shared by the mTLS tests and `cargo xtask demo`.
//!
//! Namespaces `test1`, `test2` and `bookinfo` are in the mesh (`istio-injection=enabled`), `test3`
//! is not. Node `n1` runs the clients (`sleep` in test1, test2, test3), node `n2` the servers
//! (`httpbin` in test1, test2, test3 on port 8000, `productpage-v1` in bookinfo on 9080 and 9090),
//! so every client/server pair crosses the inter-node wire. Each server has a Service with a
//! cluster IP: mesh clients connect to it (the proxy load-balances), `test3/sleep` connects to the
//! pod IP, as kube-proxy would make it.

mod probe;
mod report;
mod steps;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use probe::{Observed, OnWire, Outcome};
pub use report::{CellReport, StepReport};
pub use steps::{
    Cell, Expect, HANDSHAKE_FAILS, MTLS, PLAIN, STRICT_REFUSES, STRICT_TEST1, Step, steps,
};

use crate::{Agent, Node, Pod, PodOptions, Process, TestBed};

/// Clients, one per namespace, all on `n1`.
pub const CLIENTS: [&str; 3] = ["test1/sleep", "test2/sleep", "test3/sleep"];
/// Namespaces labelled `istio-injection=enabled`.
pub const MESH_NAMESPACES: [&str; 3] = ["test1", "test2", "bookinfo"];
/// Port every httpbin serves (Service port = target port).
pub const HTTPBIN_PORT: u16 = 8000;
/// File in the config directory that holds the current step's policies.
pub const POLICY_FILE: &str = "policy.yaml";
/// How long [`Seed::apply`] waits for the agents to apply a change: generous, because many beds
/// may share two cores; the one-second contract has its own test (identity.rs).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
const RELOADED: &str = "configuration reloaded";

/// A Service of the seed topology, backed by one pod on `n2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    pub namespace: &'static str,
    pub name: &'static str,
    /// The backing pod's name (label `app=<name>` selects it).
    pub pod: &'static str,
    pub service_account: &'static str,
    pub cluster_ip: Ipv4Addr,
    pub ports: &'static [u16],
}

impl Service {
    /// `name.namespace`, as `sockmesh explain --to` takes it.
    pub fn host(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// `name.namespace.svc.cluster.local`, as DestinationRules name it.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name, self.namespace)
    }

    /// `namespace/pod` of the endpoint.
    pub fn pod_key(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }
}

/// The servers of the seed topology.
pub const SERVICES: [Service; 4] = [
    httpbin("test1", 1),
    httpbin("test2", 2),
    httpbin("test3", 3),
    Service {
        namespace: "bookinfo",
        name: "productpage",
        pod: "productpage-v1",
        service_account: "bookinfo-productpage",
        cluster_ip: Ipv4Addr::new(172, 20, 4, 1),
        ports: &[9080, 9090],
    },
];

const fn httpbin(namespace: &'static str, n: u8) -> Service {
    Service {
        namespace,
        name: "httpbin",
        pod: "httpbin",
        service_account: "httpbin",
        cluster_ip: Ipv4Addr::new(172, 20, n, 1),
        ports: &[HTTPBIN_PORT],
    }
}

/// The service `name.namespace`; panics for a name outside [`SERVICES`].
pub fn service(host: &str) -> Service {
    *SERVICES
        .iter()
        .find(|s| s.host() == host)
        .unwrap_or_else(|| panic!("{host} is not a seed service"))
}

/// SPIFFE id of a service account in the default trust domain.
pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://cluster.local/ns/{namespace}/sa/{service_account}")
}

/// The running seed topology. Dropping it stops the agents and servers and removes the bed.
pub struct Seed {
    agents: BTreeMap<String, Agent>,
    /// Echo servers, stopped on drop.
    _servers: Vec<Process>,
    pods: BTreeMap<String, Pod>,
    nodes: BTreeMap<String, Node>,
    bed: TestBed,
}

impl Seed {
    /// Builds the nodes, namespaces, pods, echo servers and the configuration (namespaces, pods,
    /// services); agents are started separately with [`Seed::start_agents`].
    pub fn build(name: &str) -> Result<Seed> {
        Self::build_on(TestBed::new(name)?)
    }

    /// [`Seed::build`] on a [`TestBed::kubernetes`] bed: the same topology, published to the bed's
    /// API server; [`Seed::start_agents`] then starts the agents with `--kubernetes`.
    pub fn build_kubernetes(name: &str) -> Result<Seed> {
        let seed = Self::build_on(TestBed::kubernetes(name)?)?;
        let api = seed.bed.api()?;
        api.install_istio_crds();
        api.install_legacy_istio_crds();
        seed.bed.publish()?;
        Ok(seed)
    }

    fn build_on(bed: TestBed) -> Result<Seed> {
        let nodes: BTreeMap<String, Node> = ["n1", "n2"]
            .into_iter()
            .map(|n| Ok((n.to_owned(), bed.node(n)?)))
            .collect::<Result<_>>()?;
        for ns in MESH_NAMESPACES {
            bed.label_namespace(ns, "istio-injection", "enabled");
        }
        let mut pods = BTreeMap::new();
        for client in CLIENTS {
            let (ns, name) = client.split_once('/').expect("namespace/name");
            pods.insert(client.to_owned(), nodes["n1"].pod(ns, name)?);
        }
        let mut servers = Vec::new();
        for svc in SERVICES {
            let options = PodOptions::new()
                .label("app", svc.name)
                .service_account(svc.service_account);
            let pod = nodes["n2"].pod_with(svc.namespace, svc.pod, options)?;
            for port in svc.ports {
                servers.push(pod.serve_echo(*port)?);
            }
            pods.insert(svc.pod_key(), pod);
        }
        let seed = Seed {
            agents: BTreeMap::new(),
            _servers: servers,
            pods,
            nodes,
            bed,
        };
        let dir = seed.bed.write_config()?;
        std::fs::write(dir.join("services.yaml"), services_yaml())?;
        Ok(seed)
    }

    /// Starts an agent on every node with `extra` flags (e.g. `--cert-ttl`).
    pub fn start_agents(&mut self, extra: &[&str]) -> Result<()> {
        let config = self.config_dir();
        for (name, node) in &self.nodes {
            let agent = if self.bed.is_kubernetes() {
                Agent::start_kubernetes(node, extra)
            } else {
                Agent::start_with(node, &config, extra)
            }
            .with_context(|| format!("starting the agent on {name}"))?;
            self.agents.insert(name.clone(), agent);
        }
        Ok(())
    }

    pub fn bed(&self) -> &TestBed {
        &self.bed
    }

    /// The agents' `--config` directory.
    pub fn config_dir(&self) -> PathBuf {
        self.bed.config_dir()
    }

    /// Node `n1` (clients) or `n2` (servers).
    pub fn node(&self, name: &str) -> &Node {
        &self.nodes[name]
    }

    /// A pod by `namespace/name`; panics for an unknown one.
    pub fn pod(&self, key: &str) -> &Pod {
        self.pods
            .get(key)
            .unwrap_or_else(|| panic!("no seed pod {key}"))
    }

    /// The agent of node `n1` or `n2`; panics when agents are not started.
    pub fn agent(&self, node: &str) -> &Agent {
        &self.agents[node]
    }

    /// Every running agent.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    /// Where `client` connects to reach `svc` on `port`: the cluster IP from inside the mesh, the
    /// endpoint pod's IP from `test3` (no proxy there to resolve cluster IPs).
    pub fn address(&self, client: &str, svc: &Service, port: u16) -> SocketAddr {
        let in_mesh = MESH_NAMESPACES
            .iter()
            .any(|ns| client.starts_with(&format!("{ns}/")));
        let ip = if in_mesh {
            svc.cluster_ip
        } else {
            self.pod(&svc.pod_key()).ipv4()
        };
        SocketAddr::new(IpAddr::V4(ip), port)
    }

    /// Replaces the policies with `yaml` (empty: none), in the API server too on a Kubernetes bed,
    /// and waits until every agent reloaded.
    pub fn apply(&self, yaml: &str) -> Result<()> {
        let path = self.config_dir().join(POLICY_FILE);
        let before: Vec<usize> = self.agents.values().map(reloads).collect();
        if yaml.trim().is_empty() {
            if !path.exists() {
                return Ok(());
            }
            std::fs::remove_file(&path)?;
        } else {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, yaml)?;
            std::fs::rename(&tmp, &path)?;
        }
        if self.bed.is_kubernetes() {
            self.bed.publish()?;
        }
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        for (agent, before) in self.agents.values().zip(before) {
            while reloads(agent) <= before {
                if Instant::now() > deadline {
                    bail!(
                        "agent on {} did not reload {POLICY_FILE} within {RELOAD_TIMEOUT:?}; its log:\n{}",
                        agent.node().name(),
                        agent.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Applies the step's policies and probes every cell.
    pub fn run_step(&self, step: &Step) -> Result<StepReport> {
        self.apply(&step.policy)?;
        let mut cells = Vec::new();
        for cell in &step.cells {
            let observed = self.probe(cell.client, &cell.service, cell.port)?;
            cells.push(CellReport {
                cell: cell.clone(),
                observed,
            });
        }
        Ok(StepReport {
            name: step.name,
            title: step.title,
            cells,
        })
    }
}

fn reloads(agent: &Agent) -> usize {
    agent.log().matches(RELOADED).count()
}

/// Service manifests of [`SERVICES`].
fn services_yaml() -> String {
    let mut out = String::new();
    for svc in SERVICES {
        let _ = writeln!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n  clusterIP: {}\n  selector:\n    app: {}\n  ports:",
            svc.name, svc.namespace, svc.cluster_ip, svc.name
        );
        for port in svc.ports {
            let _ = writeln!(
                out,
                "  - name: tcp-{port}\n    port: {port}\n    targetPort: {port}"
            );
        }
    }
    out
}
