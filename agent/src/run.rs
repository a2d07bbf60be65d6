//! `sockmesh run`: load and attach capture, enroll this node's pods, run the proxy.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use futures::{
    FutureExt as _,
    future::{self, BoxFuture},
};
use tokio::sync::watch;
use tracing::info;

use crate::{
    accesslog::{AccessLog, AccessLogArgs},
    admin::{AdminArgs, AdminState, Check, Readiness, Servers},
    capture::{Capture, CaptureConfig},
    cgroup,
    identity::{
        CertManager,
        source::{self, CaFlags},
    },
    kube as k8s,
    metrics::{Metrics, ReloadResult},
    netns,
    node_view::NodeView,
    policy::{ConfigHandle, FileSource, MeshSettings, PodKey, Snapshot, cli::MeshArgs},
    proxy::{Limits, Proxy, Timeouts},
    telemetry::Telemetry,
    uninstall::OwnPins,
    workload::{Enroller, EnrollerParts, PodSpec, WorkloadByCgroup, config_pods},
};

/// Flags of `sockmesh run`. Every instance is scoped by its cgroup root, pin directory, node name
/// and ports, so two agents can run side by side on one machine (how tests emulate two nodes).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kubernetes-style YAML (file or directory) with this node's pods and the mesh policy.
    #[arg(
        long,
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    pub config: Option<PathBuf>,
    /// Watch the Kubernetes API (in-cluster config or KUBECONFIG) instead of `--config`.
    #[arg(long)]
    pub kubernetes: bool,
    #[command(flatten)]
    pub kube: KubeFlags,
    #[command(flatten)]
    pub owner: k8s::owner::OwnerFlags,
    /// Name of this node: pods whose `spec.nodeName` matches are enrolled.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Cgroup (relative to the cgroup2 mount, or absolute) the capture programs attach to.
    #[arg(long)]
    pub cgroup_root: PathBuf,
    /// Where the host's cgroup2 hierarchy is mounted (default: found in /proc/self/mountinfo). In
    /// a container, the host's hierarchy mounted from the host.
    #[arg(long)]
    pub cgroup2_mount: Option<PathBuf>,
    /// bpffs directory for this agent's pinned maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/sockmesh")]
    pub pin_dir: PathBuf,
    #[command(flatten)]
    pub ca: CaFlags,
    /// Lifetime of workload certificates (renewed at half-life).
    #[arg(long, default_value = "24h")]
    pub cert_ttl: humantime::Duration,
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
    /// Upstream connect timeout.
    #[arg(long, default_value = "10s")]
    pub connect_timeout: humantime::Duration,
    /// TLS handshake timeout, both directions.
    #[arg(long, default_value = "10s")]
    pub handshake_timeout: humantime::Duration,
    /// How long inbound waits for a client's first bytes to tell mesh mTLS from the rest.
    #[arg(long, default_value = "1s")]
    pub detect_timeout: humantime::Duration,
    /// A forwarded connection that moves no byte either way for this long is closed (Istio's TCP
    /// idle timeout defaults to 1h too).
    #[arg(long, default_value = "1h")]
    pub idle_timeout: humantime::Duration,
    /// Connections in flight, both directions (0: the fd limit, less a reserve, at two fds each).
    #[arg(long, default_value_t = 0)]
    pub max_connections: usize,
    /// Inbound connections from one address that are not mesh mTLS (0: an eighth of the total,
    /// at most 4096).
    #[arg(long, default_value_t = 0)]
    pub max_connections_per_source: usize,
    /// Inbound connections passed through as plaintext or the app's own TLS (0: what half the fd
    /// budget holds at six fds each, so the rest stays for mesh mTLS).
    #[arg(long, default_value_t = 0)]
    pub max_passthrough_connections: usize,
    /// Proxy worker threads (default: half the CPUs, at least one). The proxy shares the node with
    /// the workloads whose bytes it moves; on two cores one worker moved more bytes and new
    /// connections per CPU-second than two (docs/performance.md).
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// On SIGTERM, how long open connections may take to finish before the agent exits.
    #[arg(long, default_value = "30s")]
    pub drain_timeout: humantime::Duration,
    #[command(flatten)]
    pub mesh: MeshArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub access_log: AccessLogArgs,
}

/// Kubernetes discovery settings (with `--kubernetes`).
#[derive(Debug, clap::Args)]
pub struct KubeFlags {
    /// The agent's own pod, never captured (downward API).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
    /// The kubelet's `--cgroup-root`, relative to the cgroup2 mount (default: the mount itself).
    #[arg(long)]
    pub kubelet_cgroup_root: Option<PathBuf>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let nofile = crate::rlimit::raise_nofile_at_start();
    netns::init_home()?;
    crate::bpffs::ensure(&args.pin_dir)?;
    let mount = match &args.cgroup2_mount {
        Some(m) => m.clone(),
        None => cgroup::cgroup2_mount()?,
    };
    let cgroup_root = cgroup::resolve(&mount, &args.cgroup_root).context("--cgroup-root")?;
    let readiness = Arc::new(Readiness::default());
    let cgroup_root_level = cgroup_root
        .strip_prefix(&mount)
        .map_or(0, |p| p.components().count() as u32);
    let capture = Arc::new(Capture::load(&CaptureConfig {
        pin_dir: args.pin_dir.clone(),
        cgroup_root,
        cgroup_root_level,
        exclude_outbound_ports: args.exclude_outbound_ports.clone(),
        exclude_inbound_ports: args.exclude_inbound_ports.clone(),
    })?);
    readiness.set(Check::ProgramsAttached, true);
    let own_pins = OwnPins::record(&args.pin_dir).context("reading the pinned capture")?;
    let cluster = match args.kubernetes {
        true => Some(
            ::kube::Client::try_default()
                .await
                .context("Kubernetes client")?,
        ),
        false => None,
    };
    let mesh = match &cluster {
        Some(client) => {
            k8s::mesh_config::MeshSettingsSource::watch(client.clone(), args.mesh.flags()).await
        }
        None => k8s::mesh_config::MeshSettingsSource::flags_only(args.mesh.flags()),
    };
    let settings = mesh.settings();

    let metrics = Arc::new(Metrics::new());
    let log =
        AccessLog::start(&args.access_log, metrics.access_log_dropped()).context("--access-log")?;
    let telemetry = Arc::new(Telemetry::new(metrics.clone(), log));
    watch_capture(&metrics, &capture);

    let (config, pods) = if args.kubernetes {
        kubernetes_source(&args, &mount, &readiness).await?
    } else {
        let path = args
            .config
            .as_deref()
            .context("--config or --kubernetes is required")?;
        let config = file_source(path, settings.clone())?;
        readiness.set(Check::ConfigSynced, true);
        let pods = config_pods::watch_pods(config.clone(), args.node_name.clone());
        (config, future::ready(pods).boxed())
    };

    let settings_report = mesh.report.clone();
    mesh.apply(config.clone());
    let trust_domains = settings.trust_domains().context("--trust-domain-alias")?;
    info!(trust_domains = %trust_domains, "accepting mesh peers from these trust domains");
    let certs = Arc::new(source::cert_manager(
        &args.ca,
        &settings.trust_domain,
        trust_domains,
        args.cert_ttl.into(),
        metrics.clone(),
    )?);
    let timeouts = Timeouts {
        connect: args.connect_timeout.into(),
        handshake: args.handshake_timeout.into(),
        detect: args.detect_timeout.into(),
        idle: args.idle_timeout.into(),
    };
    let limits = Limits::for_fd_limit(
        nofile.map_or(1024, |n| n.soft),
        Limits {
            total: args.max_connections,
            per_source: args.max_connections_per_source,
            passthrough: args.max_passthrough_connections,
        },
    );
    info!(
        total = limits.total,
        per_source = limits.per_source,
        passthrough = limits.passthrough,
        "connection limits"
    );
    let workloads = Arc::new(WorkloadByCgroup::default());
    let proxy = Arc::new(Proxy::new(
        capture.clone(),
        workloads.clone(),
        config.clone(),
        telemetry.clone(),
        timeouts,
        limits,
    ));
    let reaper = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.reap_idle_connections().await }
    });
    let trimmer = tokio::spawn(crate::memory::trim_periodically());
    let revoker = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.revoke_on_policy_change().await }
    });
    let view = NodeView {
        node: args.node_name.clone(),
        workloads: workloads.clone(),
        certs: certs.clone(),
        config: config.clone(),
    };
    let servers = Servers::start(
        &args.admin,
        AdminState {
            source: Arc::new(view),
            telemetry,
            logging: crate::logging::control(),
            readiness: readiness.clone(),
            settings: settings_report,
        },
    )
    .await?;
    info!(admin = %servers.admin_addr, metrics = %servers.metrics_addr, readiness = %servers.readiness_addr, "admin servers up");
    let mut enroller = Enroller::new(EnrollerParts {
        capture,
        workloads,
        certs: certs.clone(),
        server: proxy.clone(),
        trust_domain: settings.trust_domain.clone(),
        cgroup_mount: mount,
        outbound_port: args.outbound_port,
        inbound_port: args.inbound_port,
    });
    let health = Health {
        metrics,
        readiness,
        certs,
        config,
    };
    let owner =
        cluster.map(|client| k8s::owner::OwnerWatch::start(client, own_pod(&args), &args.owner));
    let pods = pods.await;
    enroll_until_shutdown(&mut enroller, pods, &health).await?;
    if let Some(removal) = owner.as_ref().and_then(k8s::owner::OwnerWatch::removal) {
        crate::uninstall::on_removal(&own_pins, removal.as_str());
    }
    drain(&mut enroller, &proxy, args.drain_timeout.into()).await;
    reaper.abort();
    revoker.abort();
    trimmer.abort();
    Ok(())
}

/// Stops accepting (a newer agent's listeners take the queued and new connections), then waits for
/// accepted connections to finish, up to `grace`. Pinned programs and maps stay for the next agent.
async fn drain(enroller: &mut Enroller, proxy: &Proxy, grace: Duration) {
    enroller.stop_accepting();
    proxy.start_drain();
    info!(open = proxy.in_flight(), grace = ?grace, "draining; pinned capture stays in place for the next agent");
    let deadline = tokio::time::Instant::now() + grace;
    while proxy.in_flight() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    info!(left_open = proxy.in_flight(), "drained");
}

fn file_source(path: &Path, settings: MeshSettings) -> anyhow::Result<ConfigHandle> {
    FileSource::start(path, settings).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("configuration {}:\n{}", path.display(), list.join("\n"))
    })
}

/// The node's desired pods, once known. In `--kubernetes` mode that is after the API's first full
/// list: enrolling (and sweeping what the previous agent left) from an empty pod set would drop
/// the capture of every pod on the node until the list arrives.
type NodePods = BoxFuture<'static, watch::Receiver<Vec<PodSpec>>>;

/// The API source: the same `ConfigHandle` the file source gives, fed from the watcher, and the
/// node's pods from the API plus the kubelet's cgroups.
async fn kubernetes_source(
    args: &RunArgs,
    mount: &Path,
    readiness: &Arc<Readiness>,
) -> anyhow::Result<(ConfigHandle, NodePods)> {
    let client = ::kube::Client::try_default()
        .await
        .context("Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let api = k8s::api_source::start(client, Default::default());
    let config = ConfigHandle::new(Snapshot::build(
        Default::default(),
        args.mesh.settings(),
        Vec::new(),
    ));
    let mut applied = k8s::policy_feed::feed(api.clone(), config.clone());
    let layout = k8s::discovery::Layout::detect(
        mount,
        &args.kube.kubelet_cgroup_root.clone().unwrap_or_default(),
    )
    .context("no kubepods cgroup under --kubelet-cgroup-root: is the kubelet running?")?;
    let cgroups = k8s::cgroup_watch::watch(&layout).context("watching the kubepods cgroups")?;
    let own = own_pod(args).map(|(namespace, name)| k8s::enrollment::OwnPod { namespace, name });
    let membership = config.clone();
    let in_mesh: k8s::node_pods::InMesh =
        Arc::new(move |ns, name| membership.current().in_mesh(&PodKey::new(ns, name)));
    let (ready, node) = (readiness.clone(), args.node_name.clone());
    let pods = async move {
        info!("waiting for the first full list from the API server");
        let _ = applied.wait_for(|synced| *synced).await;
        info!("API state listed and applied");
        ready.set(Check::ConfigSynced, true);
        k8s::node_pods::watch_node_pods(node, api, cgroups, layout, own, in_mesh)
    };
    Ok((config, pods.boxed()))
}

/// The agent's own pod as `(namespace, name)`, from the downward API.
fn own_pod(args: &RunArgs) -> Option<(String, String)> {
    args.kube
        .pod_namespace
        .clone()
        .zip(args.kube.pod_name.clone())
}

/// Metrics read from the capture maps at scrape time.
fn watch_capture(metrics: &Metrics, capture: &Arc<Capture>) {
    let cap = capture.clone();
    metrics.set_bpf_events(Box::new(move || cap.stats()));
    let cap = capture.clone();
    metrics.set_bpf_map_entries(Box::new(move || {
        vec![
            ("WORKLOADS", cap.workload_cgroups().len() as u64),
            ("POD_ADDRS", cap.pod_addrs().len() as u64),
            ("sk_lookup_links", cap.linked_netns().len() as u64),
        ]
    }));
}

/// What the reconcile loop keeps up to date besides enrollment.
struct Health {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    certs: Arc<CertManager>,
    config: ConfigHandle,
}

impl Health {
    fn after_reconcile(&self, enroller: &Enroller, desired: usize) {
        self.metrics.set_enrolled_workloads(enroller.enrolled());
        self.readiness
            .set(Check::CertificatesIssued, enroller.enrolled() == desired);
        self.refresh_certificates();
    }

    fn refresh_certificates(&self) {
        for cert in self.certs.cert_infos() {
            if let Ok(t) = humantime::parse_rfc3339_weak(&cert.not_after) {
                let unix = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                self.metrics.set_certificate_expiry(&cert.identity, unix);
            }
        }
    }
}

/// Reconciles on every change of the pod set until SIGTERM/SIGINT.
async fn enroll_until_shutdown(
    enroller: &mut Enroller,
    mut pods: watch::Receiver<Vec<PodSpec>>,
    health: &Health,
) -> anyhow::Result<()> {
    let desired = pods.borrow_and_update().clone();
    enroller.reconcile(&desired);
    enroller.sweep_stale();
    health.after_reconcile(enroller, desired.len());
    info!(pods = desired.len(), "agent ready");
    let mut config_changes = health.config.subscribe();
    let mut last_error = None;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            changed = pods.changed() => {
                if changed.is_err() {
                    break;
                }
                let desired = pods.borrow_and_update().clone();
                enroller.reconcile(&desired);
                health.after_reconcile(enroller, desired.len());
            }
            _ = config_changes.changed() => health.metrics.config_reloaded(ReloadResult::success),
            _ = tick.tick() => {
                let error = health.config.last_error().map(|e| format!("{e:?}"));
                if error.is_some() && error != last_error {
                    health.metrics.config_reloaded(ReloadResult::failure);
                }
                last_error = error;
                health.refresh_certificates();
                // Pods not enrolled yet (e.g. the CA was unreachable) are tried again.
                let desired = pods.borrow().clone();
                if enroller.enrolled() < desired.len() {
                    enroller.reconcile(&desired);
                    health.after_reconcile(enroller, desired.len());
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}
