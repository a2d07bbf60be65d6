//! Resident memory an agent spends per enrolled pod: one agent, a baseline with no pod, then many
//! cheap pods (a netns with its address on loopback and a pod cgroup with one container, no
//! process and no veth) enrolled at once.
use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use testbed::{Node, TestBed};

use super::agents::RunningAgent;
use super::measure;
use crate::cmd::Cmd;

const NAMESPACE: &str = "podmem";
/// Time the agent gets to settle (allocator, first metrics) before each reading.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy)]
pub struct PodMemory {
    pub pods: usize,
    pub baseline_mb: f64,
    pub loaded_mb: f64,
}

impl PodMemory {
    pub fn per_pod_kib(&self) -> f64 {
        (self.loaded_mb - self.baseline_mb) * 1e6 / 1024.0 / self.pods.max(1) as f64
    }
}

/// Named network namespaces created here; deleted on drop (the bed removes the cgroups).
struct CheapNetns(Vec<String>);

impl Drop for CheapNetns {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Cmd::new("ip").args(["netns", "del", name]).read();
        }
    }
}

pub fn measure(binary: &Path, pods: usize) -> Result<PodMemory> {
    let bed = TestBed::new("bench-pods")?;
    let node = bed.node("n1")?;
    bed.label_namespace(NAMESPACE, "sockmesh.io/capture", "enabled");
    let config = bed.write_config()?;
    let mut netns = CheapNetns(Vec::new());
    let agent = RunningAgent::start(binary, &node, &config, &[])?;
    std::thread::sleep(SETTLE);
    let baseline_mb = measure::memory(agent.pid())?.rss_mb;
    println!("bench: enrolling {pods} pods on one agent (baseline RSS {baseline_mb:.1} MB)");
    for i in 0..pods {
        let name = format!("{}-cheap{i}", bed.id());
        Cmd::new("ip").args(["netns", "add", &name]).read()?;
        netns.0.push(name.clone());
        create_pod(&bed, &node, &name, i)?;
    }
    agent.wait_enrolled(pods, Duration::from_secs(60 + pods as u64 / 5))?;
    std::thread::sleep(SETTLE);
    let loaded_mb = measure::memory(agent.pid())?.rss_mb;
    agent.stop()?;
    Ok(PodMemory {
        pods,
        baseline_mb,
        loaded_mb,
    })
}

/// Address, cgroups and manifest of cheap pod `i` in the netns `netns`. Addresses come from the
/// benchmarking range 198.18.0.0/15, which no bed uses.
fn create_pod(bed: &TestBed, node: &Node, netns: &str, i: usize) -> Result<()> {
    let ip = format!("198.18.{}.{}", i / 250, i % 250 + 1);
    Cmd::new("ip")
        .args(["-n", netns, "link", "set", "lo", "up"])
        .read()?;
    Cmd::new("ip")
        .args(["-n", netns, "addr", "add", &format!("{ip}/32"), "dev", "lo"])
        .read()?;
    let name = format!("p{i}");
    let pod_cgroup = node
        .cgroup()
        .path()
        .join("pods")
        .join(format!("{NAMESPACE}.{name}"));
    fs::create_dir_all(pod_cgroup.join("main"))
        .with_context(|| format!("creating {}", pod_cgroup.display()))?;
    let mount = testbed::cgroup2_mount()?;
    let rel = Path::new("/").join(pod_cgroup.strip_prefix(mount)?);
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n  \
         labels: {{app: {name}}}\n  annotations:\n    {}: \"{}\"\n    {}: \"/run/netns/{netns}\"\n\
         spec:\n  nodeName: {}\n  serviceAccountName: {NAMESPACE}\n  containers:\n  - name: main\n    \
         image: none\nstatus:\n  phase: Running\n  podIP: \"{ip}\"\n  podIPs:\n  - ip: \"{ip}\"\n",
        testbed::CGROUP_ANNOTATION,
        rel.display(),
        testbed::NETNS_ANNOTATION,
        node.name(),
    );
    let path = bed
        .config_dir()
        .join(format!("pod-{NAMESPACE}-{name}.yaml"));
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, manifest)?;
    fs::rename(&tmp, &path)?;
    Ok(())
}
