//! An emulated Kubernetes node: a netns with a bridge for its pods and an uplink to the fabric,
//! and a cgroup subtree (the agent's attach point) holding the pods and the agent.
//!
//! The agent itself stays in the root netns (it reaches pods with setns), so a node's netns is
//! only the router between its pods and the other nodes.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Result, bail, ensure};

use crate::addr::{self, MAX_PODS};
use crate::bed::BedShared;
use crate::cgroup::Cgroup;
use crate::mounts::bpffs_mount;
use crate::netns::Netns;
use crate::pod::{Pod, PodOptions};
use crate::process::{Placement, Process};

/// Numbers agent log files, so each agent process has its own.
static AGENT_SEQ: AtomicU32 = AtomicU32::new(0);

/// Handle to a node; cheap to clone. Its resources belong to the [`crate::TestBed`].
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

#[derive(Debug)]
struct NodeInner {
    bed: Arc<BedShared>,
    name: String,
    index: u8,
    netns: Netns,
    cgroup: Cgroup,
    agent_cgroup: Cgroup,
    pods_cgroup: Cgroup,
    pin_dir: PathBuf,
}

impl Node {
    pub(crate) fn create(bed: &Arc<BedShared>, name: &str, index: u8) -> Result<Node> {
        let slot = bed.slot.index();
        let cgroup = Cgroup::create(&format!("{}/{name}", bed.cgroup.rel()))?;
        let agent_cgroup = Cgroup::create(&format!("{}/agent", cgroup.rel()))?;
        let pods_cgroup = if bed.kubernetes {
            // The kubelet's cgroupfs driver: `kubepods/<qos>/pod<uid>`; every test pod is BestEffort.
            Cgroup::create(&format!("{}/kubepods", cgroup.rel()))?;
            Cgroup::create(&format!("{}/kubepods/besteffort", cgroup.rel()))?
        } else {
            Cgroup::create(&format!("{}/pods", cgroup.rel()))?
        };
        let netns = bed.create_netns(&format!("n-{name}"))?;
        netns.sysctl("net/ipv4/ip_forward", "1")?;
        netns.sysctl("net/ipv6/conf/all/forwarding", "1")?;
        let port = format!("n{index}");
        bed.fabric.ip_batch(&[
            &format!(
                "link add {port} type veth peer name uplink netns {}",
                netns.name()
            ),
            &format!("link set {port} master br0 up"),
        ])?;
        let (gw4, gw6) = (addr::pod_v4(slot, index, 1), addr::pod_v6(slot, index, 1));
        let (up4, up6) = (addr::fabric_v4(slot, index), addr::fabric_v6(slot, index));
        let mut cmds = vec![
            "link add br0 type bridge".to_owned(),
            format!("addr add {gw4}/24 dev br0"),
            format!("addr add {gw6}/64 dev br0 nodad"),
            "link set br0 up".to_owned(),
            format!("addr add {up4}/24 dev uplink"),
            format!("addr add {up6}/64 dev uplink nodad"),
            "link set uplink up".to_owned(),
        ];
        for other in bed.state().nodes.iter() {
            cmds.extend(other.route_cmds());
        }
        netns.ip_batch(&cmds.iter().map(String::as_str).collect::<Vec<_>>())?;
        let node = Node {
            inner: Arc::new(NodeInner {
                bed: bed.clone(),
                name: name.to_owned(),
                index,
                netns,
                cgroup,
                agent_cgroup,
                pods_cgroup,
                pin_dir: bpffs_mount()?.join(bed.scoped_name(name)),
            }),
        };
        let back = node.route_cmds();
        for other in bed.state().nodes.iter() {
            other
                .inner
                .netns
                .ip_batch(&back.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        Ok(node)
    }

    /// `ip route` commands that send this node's pod subnets to its uplink address.
    fn route_cmds(&self) -> Vec<String> {
        let (v4, v6) = self.pod_cidrs();
        vec![
            format!("route add {v4} via {}", self.ipv4()),
            format!("route add {v6} via {}", self.ipv6()),
        ]
    }

    /// Adds a pod with default options (label `app=<name>`, service account `<name>`).
    pub fn pod(&self, namespace: &str, name: &str) -> Result<Pod> {
        self.pod_with(namespace, name, PodOptions::new())
    }

    /// Adds a pod: netns, veth to the node's bridge, IPv4 and IPv6 addresses with default
    /// routes, a pod cgroup under [`Node::cgroup`] with one cgroup per container.
    pub fn pod_with(&self, namespace: &str, name: &str, options: PodOptions) -> Result<Pod> {
        let bed = &self.inner.bed;
        let index = {
            let state = bed.state();
            if state
                .pods
                .iter()
                .any(|p| p.namespace() == namespace && p.name() == name)
            {
                bail!("pod {namespace}/{name} exists");
            }
            state
                .pods
                .iter()
                .filter(|p| p.node() == self.name())
                .count()
                + 1
        };
        if index > usize::from(MAX_PODS) {
            bail!("at most {MAX_PODS} pods per node");
        }
        let pod = Pod::create(self, namespace, name, index as u8, options)?;
        let mut state = bed.state();
        state.namespaces.entry(namespace.to_owned()).or_default();
        state.pods.push(pod.clone());
        Ok(pod)
    }

    pub(crate) fn bed(&self) -> &Arc<BedShared> {
        &self.inner.bed
    }

    pub(crate) fn index(&self) -> u8 {
        self.inner.index
    }

    pub(crate) fn netns(&self) -> &Netns {
        &self.inner.netns
    }

    pub(crate) fn pods_cgroup(&self) -> &Cgroup {
        &self.inner.pods_cgroup
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The cgroup the node's agent attaches its programs to; every pod cgroup is below it
    /// (`<node>/pods/<namespace>.<pod>/<container>`), and so is [`Node::agent_cgroup`].
    pub fn cgroup(&self) -> &Cgroup {
        &self.inner.cgroup
    }

    /// A cgroup for the agent (`<node>/agent`): below the attach point, but never a pod's.
    pub fn agent_cgroup(&self) -> &Cgroup {
        &self.inner.agent_cgroup
    }

    /// Starts an agent (or any helper) in [`Node::agent_cgroup`] in the root netns; output goes
    /// to [`Process::log`].
    /// Each spawn logs to its own file, so a restarted agent's log starts empty.
    pub fn spawn_agent(&self, cmd: Command) -> Result<Process> {
        let placement = Placement {
            cgroup: self.inner.agent_cgroup.clone(),
            netns: None,
        };
        let log = self.inner.bed.workdir.join(format!(
            "agent-{}.{}.log",
            self.name(),
            AGENT_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        placement.spawn(cmd, log)
    }

    /// The bed's work directory (logs, configuration, the mesh CA shared by all nodes).
    pub fn bed_workdir(&self) -> &Path {
        &self.inner.bed.workdir
    }

    /// The mesh CA directory every agent of the bed shares, so they trust each other.
    pub fn ca_dir(&self) -> PathBuf {
        self.inner.bed.workdir.join("ca")
    }

    /// A BPF pin directory for this node's agent (`<bpffs>/<bed id>-<node>`), not created here;
    /// the bed removes it on drop so pinned links and maps never outlive the test.
    pub fn pin_dir(&self) -> &Path {
        &self.inner.pin_dir
    }

    /// Port `k` (0..8) of a block reserved for this node's agent (admin, metrics, ...) on the
    /// root netns loopback: unique among live beds, below the ephemeral range. Nodes 1..=12 only.
    pub fn local_port(&self, k: u16) -> Result<u16> {
        let node = u16::from(self.inner.index);
        ensure!(
            k < 8 && node <= 12,
            "local ports exist for k < 8 on the first 12 nodes"
        );
        Ok(10_000 + u16::from(self.inner.bed.slot.index()) * 100 + (node - 1) * 8 + k)
    }

    /// The node's router namespace (bridge `br0`, uplink `uplink`).
    pub fn netns_path(&self) -> &Path {
        self.inner.netns.path()
    }

    /// The node's address on the fabric.
    pub fn ipv4(&self) -> Ipv4Addr {
        addr::fabric_v4(self.inner.bed.slot.index(), self.inner.index)
    }

    pub fn ipv6(&self) -> Ipv6Addr {
        addr::fabric_v6(self.inner.bed.slot.index(), self.inner.index)
    }

    /// Pod subnets `(IPv4 /24, IPv6 /64)`.
    pub fn pod_cidrs(&self) -> (String, String) {
        addr::pod_cidrs(self.inner.bed.slot.index(), self.inner.index)
    }

    /// Pods on this node.
    pub fn pods(&self) -> Vec<Pod> {
        let state = self.inner.bed.state();
        state
            .pods
            .iter()
            .filter(|p| p.node() == self.name())
            .cloned()
            .collect()
    }
}
