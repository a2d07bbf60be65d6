//! A pod: a netns attached to its node's bridge, and a pod cgroup with one child cgroup per
//! container, like kubelet's `kubepods/.../pod<uid>/<container>` layout.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::addr;
use crate::cgroup::Cgroup;
use crate::client::{self, ConnectError, EchoReply, FailKind, ManyReport};
use crate::netns::Netns;
use crate::node::Node;
use crate::process::{Placement, Process, RUN_TIMEOUT};
use crate::tool::pod_tool;
use crate::yaml;

/// Name of the container every pod has; [`Pod::spawn`] and [`Pod::run`] use it.
pub const MAIN_CONTAINER: &str = "main";
/// Per-connection timeout the client helpers pass to pod-tool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Kubernetes metadata of a pod beyond namespace and name.
#[derive(Debug, Clone, Default)]
pub struct PodOptions {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    service_account: Option<String>,
}

impl PodOptions {
    pub fn new() -> PodOptions {
        PodOptions::default()
    }

    /// Adds a label (`app=<name>` is always set unless overridden).
    pub fn label(mut self, key: &str, value: &str) -> PodOptions {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Adds an annotation next to the `sockmesh.io/cgroup` and `sockmesh.io/netns` ones.
    pub fn annotation(mut self, key: &str, value: &str) -> PodOptions {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Service account (default: the pod name), which selects the workload's SPIFFE identity.
    pub fn service_account(mut self, name: &str) -> PodOptions {
        self.service_account = Some(name.to_owned());
        self
    }
}

/// Handle to a pod; cheap to clone. Its resources belong to the [`crate::TestBed`].
#[derive(Debug, Clone)]
pub struct Pod {
    inner: Arc<PodInner>,
}

#[derive(Debug)]
struct PodInner {
    name: String,
    namespace: String,
    node: String,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
    netns: Netns,
    cgroup: Cgroup,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    service_account: String,
    containers: Mutex<Vec<Container>>,
    workdir: PathBuf,
    /// Kubernetes metadata.uid.
    uid: String,
    /// Kubelet layout (container cgroups named by container id) and a running `pause` sandbox.
    kubernetes: bool,
    sandbox: Mutex<Option<Process>>,
}

impl Pod {
    pub(crate) fn create(
        node: &Node,
        namespace: &str,
        name: &str,
        index: u8,
        options: PodOptions,
    ) -> Result<Pod> {
        let bed = node.bed();
        let (slot, n) = (bed.slot.index(), node.index());
        let host = index + 1;
        let (ipv4, ipv6) = (addr::pod_v4(slot, n, host), addr::pod_v6(slot, n, host));
        let (gw4, gw6) = (addr::pod_v4(slot, n, 1), addr::pod_v6(slot, n, 1));
        let uid = format!("{slot:08x}-{n:04x}-4000-8000-{index:012x}");
        let dir = if bed.kubernetes {
            format!("pod{uid}")
        } else {
            format!("{namespace}.{name}")
        };
        let cgroup = Cgroup::create(&format!("{}/{dir}", node.pods_cgroup().rel()))?;
        // Namespaces have no dots, so `<namespace>.<name>` cannot collide.
        let netns = bed.create_netns(&format!("p-{namespace}.{name}"))?;
        let port = format!("p{index}");
        node.netns().ip_batch(&[
            &format!(
                "link add {port} type veth peer name eth0 netns {}",
                netns.name()
            ),
            &format!("link set {port} master br0 up"),
        ])?;
        netns.ip_batch(&[
            &format!("addr add {ipv4}/24 dev eth0"),
            &format!("addr add {ipv6}/64 dev eth0 nodad"),
            "link set eth0 up",
            &format!("route add default via {gw4}"),
            &format!("route add ::/0 via {gw6}"),
        ])?;
        let mut labels = BTreeMap::from([("app".to_owned(), name.to_owned())]);
        labels.extend(options.labels);
        let pod = Pod {
            inner: Arc::new(PodInner {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                node: node.name().to_owned(),
                ipv4,
                ipv6,
                netns,
                cgroup,
                labels,
                annotations: options.annotations,
                service_account: options.service_account.unwrap_or_else(|| name.to_owned()),
                containers: Mutex::default(),
                workdir: bed.workdir.clone(),
                uid,
                kubernetes: bed.kubernetes,
                sandbox: Mutex::default(),
            }),
        };
        if bed.kubernetes {
            pod.start_sandbox()?;
        }
        pod.add_container(MAIN_CONTAINER)?;
        Ok(pod)
    }

    /// The kubelet's sandbox: a container running a process named `pause` that holds the pod's
    /// network namespace, which is how the agent finds the netns from the pod's cgroups.
    fn start_sandbox(&self) -> Result<()> {
        let pause = self.inner.workdir.join("pause");
        if !pause.exists() {
            std::os::unix::fs::symlink(pod_tool()?, &pause)?;
        }
        let container = self.add_container(SANDBOX_CONTAINER)?;
        let mut cmd = Command::new(&pause);
        cmd.arg("sleep");
        let process = container.spawn(cmd)?;
        *self.inner.sandbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(process);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Name of the node the pod runs on.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    pub fn ipv4(&self) -> Ipv4Addr {
        self.inner.ipv4
    }

    pub fn ipv6(&self) -> Ipv6Addr {
        self.inner.ipv6
    }

    /// `ipv4:port`.
    pub fn v4(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.inner.ipv4, port))
    }

    /// `[ipv6]:port`.
    pub fn v6(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.inner.ipv6, port))
    }

    /// `[::ffff:ipv4]:port`: an IPv6 socket reaching the IPv4 address, as Java clients do.
    pub fn v4_mapped(&self, port: u16) -> SocketAddr {
        SocketAddr::from((IpAddr::V6(self.inner.ipv4.to_ipv6_mapped()), port))
    }

    /// `/run/netns/<bed id>-p-<namespace>.<name>`.
    pub fn netns_path(&self) -> &Path {
        self.inner.netns.path()
    }

    /// The pod-level cgroup (`sockmesh.io/cgroup`); processes live in its container children.
    pub fn cgroup(&self) -> &Cgroup {
        &self.inner.cgroup
    }

    /// Absolute path of the pod-level cgroup.
    pub fn cgroup_path(&self) -> &Path {
        self.inner.cgroup.path()
    }

    /// Pod-level cgroup relative to the cgroup2 mount, e.g. `/smt-1-0-x/n1/pods/test1.sleep`.
    pub fn cgroup_rel(&self) -> &str {
        self.inner.cgroup.rel()
    }

    /// Cgroup id of the main container: what `bpf_get_current_cgroup_id()` returns for processes
    /// started with [`Pod::spawn`] / [`Pod::run`] and the client and server helpers.
    pub fn cgroup_id(&self) -> u64 {
        self.main().cgroup().id()
    }

    /// Cgroup ids of all containers (every one must map to this pod).
    pub fn cgroup_ids(&self) -> Vec<u64> {
        self.containers().iter().map(|c| c.cgroup().id()).collect()
    }

    pub fn containers(&self) -> Vec<Container> {
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The container named `name`, if any.
    pub fn container(&self, name: &str) -> Option<Container> {
        self.containers().into_iter().find(|c| c.name() == name)
    }

    /// The container every pod has ([`MAIN_CONTAINER`]).
    pub fn main(&self) -> Container {
        self.container(MAIN_CONTAINER)
            .expect("every pod has a main container")
    }

    /// Adds a container: a new cgroup `<pod cgroup>/<name>` sharing the pod's netns.
    pub fn add_container(&self, name: &str) -> Result<Container> {
        let mut containers = self
            .inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if containers.iter().any(|c| c.name() == name) {
            bail!(
                "container {name} exists in pod {}/{}",
                self.namespace(),
                self.name()
            );
        }
        let dir = if self.inner.kubernetes {
            container_id(&self.inner.uid, name)
        } else {
            name.to_owned()
        };
        let cgroup = Cgroup::create(&format!("{}/{dir}", self.cgroup_rel()))?;
        let container = Container {
            name: name.to_owned(),
            label: format!("{}.{}.{name}", self.namespace(), self.name()),
            placement: Placement {
                cgroup,
                netns: Some(self.netns_path().to_owned()),
            },
            workdir: self.inner.workdir.clone(),
        };
        containers.push(container.clone());
        Ok(container)
    }

    /// Starts `cmd` in the main container; killed when the returned [`Process`] drops.
    pub fn spawn(&self, cmd: Command) -> Result<Process> {
        self.main().spawn(cmd)
    }

    /// Runs `cmd` in the main container and returns its output; fails after [`RUN_TIMEOUT`].
    pub fn run(&self, cmd: Command) -> Result<Output> {
        self.main().run(cmd)
    }

    /// [`Pod::run`] with another time limit.
    pub fn run_timeout(&self, cmd: Command, timeout: Duration) -> Result<Output> {
        self.main().run_timeout(cmd, timeout)
    }

    /// Starts a pod-tool echo server on `port` (IPv4 and IPv6, all addresses) and waits until
    /// it listens. Replies carry `server = "<namespace>/<name>"`.
    pub fn serve_echo(&self, port: u16) -> Result<Process> {
        let mut cmd = Command::new(pod_tool()?);
        cmd.arg("serve").arg(port.to_string());
        cmd.arg("--name")
            .arg(format!("{}/{}", self.namespace(), self.name()));
        let mut proc = self.spawn(cmd)?;
        proc.wait_for_log("listening", Duration::from_secs(10))?;
        Ok(proc)
    }

    /// Connects to `addr` from this pod, sends `msg`, returns the server's report. A failed
    /// connection is an error that downcasts to [`ConnectError`].
    pub fn connect(&self, addr: impl Display, msg: &str) -> Result<EchoReply> {
        self.connect_timeout(addr, msg, CONNECT_TIMEOUT)
    }

    /// [`Pod::connect`] with another limit for connecting and for the reply.
    pub fn connect_timeout(
        &self,
        addr: impl Display,
        msg: &str,
        timeout: Duration,
    ) -> Result<EchoReply> {
        let mut cmd = Command::new(pod_tool()?);
        cmd.args(["connect", &addr.to_string(), msg, "--timeout"]);
        cmd.arg(timeout.as_secs_f64().to_string());
        client::parse_connect(&self.run_timeout(cmd, timeout * 2 + RUN_TIMEOUT)?)
    }

    /// Like [`Pod::connect`], for a connection that must fail: returns how it failed, and an
    /// error if it succeeded.
    pub fn connect_fails(&self, addr: impl Display, msg: &str) -> Result<FailKind> {
        match self.connect(&addr, msg) {
            Ok(reply) => bail!("connection to {addr} succeeded unexpectedly: {reply:?}"),
            Err(e) => match e.downcast::<ConnectError>() {
                Ok(failure) => Ok(failure.kind),
                Err(other) => Err(other),
            },
        }
    }

    /// Opens `n` connections to `addr` at once, then one exchange on each.
    pub fn connect_many(&self, addr: impl Display, n: usize) -> Result<ManyReport> {
        let mut cmd = Command::new(pod_tool()?);
        cmd.args([
            "connect-many",
            &addr.to_string(),
            &n.to_string(),
            "--timeout",
        ]);
        cmd.arg(CONNECT_TIMEOUT.as_secs_f64().to_string());
        client::parse_many(&self.run(cmd)?)
    }

    /// Kubernetes Pod manifest for the agent's `--config` directory.
    pub fn yaml(&self) -> String {
        let i = &self.inner;
        let containers: Vec<String> = self
            .containers()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        yaml::pod(&yaml::PodManifest {
            name: &i.name,
            namespace: &i.namespace,
            node: &i.node,
            service_account: &i.service_account,
            labels: &i.labels,
            annotations: &i.annotations,
            cgroup: i.cgroup.rel(),
            netns: i.netns.path(),
            ips: &[i.ipv4.into(), i.ipv6.into()],
            containers: &containers,
        })
    }

    /// Kubernetes metadata.uid.
    pub fn uid(&self) -> &str {
        &self.inner.uid
    }

    /// The Pod as the API server holds it once the kubelet runs it: scheduled on its node,
    /// Running, BestEffort, with its addresses. No cgroup or netns annotations: an agent in
    /// `--kubernetes` mode finds those from the uid, as on a real node.
    pub fn api_object(&self) -> serde_json::Value {
        let i = &self.inner;
        let containers: Vec<serde_json::Value> = self
            .containers()
            .iter()
            .filter(|c| c.name() != SANDBOX_CONTAINER)
            .map(|c| serde_json::json!({"name": c.name(), "image": "sockmesh/pod-tool"}))
            .collect();
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": i.name, "namespace": i.namespace, "uid": i.uid,
                         "labels": i.labels, "annotations": i.annotations},
            "spec": {"nodeName": i.node, "serviceAccountName": i.service_account,
                     "containers": containers},
            "status": {"phase": "Running", "qosClass": "BestEffort",
                       "podIP": i.ipv4.to_string(),
                       "podIPs": [{"ip": i.ipv4.to_string()}, {"ip": i.ipv6.to_string()}]}
        })
    }

    /// File name [`crate::TestBed::write_config`] uses: `pod-<namespace>-<name>.yaml`.
    pub fn yaml_file_name(&self) -> String {
        format!("pod-{}-{}.yaml", self.namespace(), self.name())
    }
}

/// The sandbox container of pods on a Kubernetes bed.
const SANDBOX_CONTAINER: &str = "pause";

/// A container id as containerd makes them (64 hex digits), stable per pod and container name.
fn container_id(uid: &str, name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    uid.replace('-', "")
        .chars()
        .chain(hex.chars())
        .chain(std::iter::repeat('0'))
        .take(64)
        .collect()
}

/// One container of a pod: its own cgroup, the pod's netns.
#[derive(Debug, Clone)]
pub struct Container {
    name: String,
    label: String,
    placement: Placement,
    workdir: PathBuf,
}

impl Container {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn cgroup(&self) -> &Cgroup {
        &self.placement.cgroup
    }

    /// Starts `cmd` in this container (joins the cgroup, then the netns); stdout and stderr go to
    /// [`Process::log`]. Killed when the returned [`Process`] drops.
    pub fn spawn(&self, cmd: Command) -> Result<Process> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let log = self.workdir.join(format!("{}.{seq}.log", self.label));
        self.placement.spawn(cmd, log)
    }

    /// Runs `cmd` in this container and returns its output; fails after [`RUN_TIMEOUT`].
    pub fn run(&self, cmd: Command) -> Result<Output> {
        self.placement.run(cmd, RUN_TIMEOUT)
    }

    /// [`Container::run`] with another time limit.
    pub fn run_timeout(&self, cmd: Command, timeout: Duration) -> Result<Output> {
        self.placement.run(cmd, timeout)
    }
}
