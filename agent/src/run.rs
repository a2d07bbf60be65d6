//! `sockmesh run`: load and attach capture, enroll this node's pods, run the proxy.
use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::info;

use crate::{
    capture::{Capture, CaptureConfig},
    cgroup, netns,
    policy::{FileSource, MeshSettings},
    proxy::Proxy,
    workload::{Enroller, PodSpec, WorkloadByCgroup, config_pods},
};

/// Flags of `sockmesh run`. Every instance is scoped by its cgroup root, pin directory, node name
/// and ports, so two agents can run side by side on one machine (how tests emulate two nodes).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kubernetes-style YAML (file or directory) with this node's pods and the mesh policy.
    #[arg(long)]
    pub config: PathBuf,
    /// Name of this node: pods whose `spec.nodeName` matches are enrolled.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Cgroup (relative to the cgroup2 mount, or absolute) the capture programs attach to.
    #[arg(long)]
    pub cgroup_root: PathBuf,
    /// bpffs directory for this agent's pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/sockmesh")]
    pub pin_dir: PathBuf,
    /// Port of the outbound listener inside each pod.
    #[arg(long, default_value_t = 15001)]
    pub outbound_port: u16,
    /// Port of the inbound listener inside each pod.
    #[arg(long, default_value_t = 15006)]
    pub inbound_port: u16,
    /// Destination ports that outbound capture leaves alone (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,
    /// Pod ports that inbound capture leaves alone (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<u16>,
    /// Upstream connect timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    #[command(flatten)]
    pub mesh: MeshFlags,
}

/// Settings Istio keeps in meshConfig.
#[derive(Debug, clap::Args)]
pub struct MeshFlags {
    /// Namespace whose PeerAuthentication/DestinationRule apply mesh-wide.
    #[arg(long, default_value = "istio-system")]
    pub root_namespace: String,
    /// Trust domain of SPIFFE identities.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// DNS suffix of Service FQDNs.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Turn auto mTLS off (plaintext unless a DestinationRule says otherwise).
    #[arg(long)]
    pub no_auto_mtls: bool,
}

impl MeshFlags {
    pub fn settings(&self) -> MeshSettings {
        MeshSettings {
            root_namespace: self.root_namespace.clone(),
            trust_domain: self.trust_domain.clone(),
            auto_mtls: !self.no_auto_mtls,
            cluster_domain: self.cluster_domain.clone(),
        }
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    netns::init_home()?;
    let config = FileSource::start(&args.config, args.mesh.settings()).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!(
            "configuration {}:\n{}",
            args.config.display(),
            list.join("\n")
        )
    })?;
    let pods = config_pods::watch_pods(config.clone(), args.node_name.clone());
    let mount = cgroup::cgroup2_mount()?;
    crate::bpffs::ensure(&args.pin_dir)?;
    let cgroup_root = cgroup::resolve(&mount, &args.cgroup_root).context("--cgroup-root")?;
    let capture = Arc::new(Capture::load(&CaptureConfig {
        pin_dir: args.pin_dir.clone(),
        cgroup_root,
        exclude_outbound_ports: args.exclude_outbound_ports.clone(),
        exclude_inbound_ports: args.exclude_inbound_ports.clone(),
    })?);
    let proxy = Arc::new(Proxy {
        capture,
        workloads: Arc::new(WorkloadByCgroup::default()),
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
    });
    let mut enroller = Enroller::new(proxy, mount, args.outbound_port, args.inbound_port);
    enroll_until_shutdown(&mut enroller, pods).await
}

/// Reconciles on every change of the pod set until SIGTERM/SIGINT.
async fn enroll_until_shutdown(
    enroller: &mut Enroller,
    mut pods: watch::Receiver<Vec<PodSpec>>,
) -> anyhow::Result<()> {
    let desired = pods.borrow_and_update().clone();
    enroller.reconcile(&desired);
    enroller.sweep_stale();
    info!(pods = desired.len(), "agent ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            changed = pods.changed() => {
                if changed.is_err() {
                    break;
                }
                let desired = pods.borrow_and_update().clone();
                enroller.reconcile(&desired);
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    info!("shutting down; pinned capture stays in place for the next agent");
    Ok(())
}
