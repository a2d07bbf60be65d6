//! `sockmesh ca`: a small CA server for clusters without istiod, speaking Istio's CA API
//! (`identity::ca_api`) so that sockmesh agents and ztunnel get their certificates from it and no
//! node holds a signing key. It signs with the plug-in CA from `--ca-dir` (the `cacerts` Secret,
//! mounted only into this Deployment), authenticates callers with TokenReview
//! ([`authenticate`]) and authorizes like istiod's node authorizer ([`authorize`]).
//!
//! The answer's `cert_chain` is the leaf, the intermediates of `cert-chain.pem`, then every root
//! of `root-cert.pem` (a client tells them apart: roots are self-signed). Putting the new root next
//! to the old one in `root-cert.pem` (and later signing with the new key) is how a root rotation
//! reaches every node without a dropped connection.

mod authenticate;
mod authorize;
mod grpc;
mod metrics;
mod refusal;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tracing::info;

use crate::identity::{Issuer, MeshCa};
use authenticate::TokenReviewer;
use authorize::{KubePods, NodeAuthorizer};
use service::CertificateService;

/// Flags of `sockmesh ca`.
#[derive(Debug, clap::Args)]
pub struct CaArgs {
    /// Plug-in CA (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem); never created here.
    #[arg(long, default_value = "/etc/cacerts")]
    pub ca_dir: PathBuf,
    /// gRPC (TLS) listen address; 15012 is istiod's CA port.
    #[arg(long, default_value = "0.0.0.0:15012")]
    pub listen: SocketAddr,
    /// Prometheus `/metrics` listen address.
    #[arg(long, default_value = "0.0.0.0:15014")]
    pub metrics_listen: SocketAddr,
    /// Trust domain of the identities this CA signs.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Names (DNS or IP) in the serving certificate; clients dial one of them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sockmesh-ca.sockmesh-system.svc,localhost"
    )]
    pub server_name: Vec<String>,
    /// `namespace/service-account` of node agents that may obtain identities of pods on their own
    /// node (istiod's `CA_TRUSTED_NODE_ACCOUNTS`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sockmesh-system/sockmesh-agent"
    )]
    pub node_agent: Vec<String>,
    /// Longest lifetime signed, whatever the request asks.
    #[arg(long, default_value = "24h")]
    pub max_ttl: humantime::Duration,
}

pub async fn run(args: CaArgs) -> anyhow::Result<()> {
    let ca = Arc::new(MeshCa::load(&args.ca_dir).context("--ca-dir")?);
    let node_agents = args
        .node_agent
        .iter()
        .map(|s| {
            s.split_once('/')
                .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty())
                .map(|(ns, sa)| (ns.to_string(), sa.to_string()))
                .with_context(|| format!("--node-agent {s:?}: expected namespace/service-account"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client = kube::Client::try_default()
        .await
        .context("Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let tls = grpc::serving_config(&ca, &args.server_name).context("serving certificate")?;
    let metrics = Arc::new(metrics::CaMetrics::new());
    let service = Arc::new(CertificateService {
        issuer: Issuer::new(ca.clone()),
        reviewer: TokenReviewer::new(client.clone()),
        authorizer: NodeAuthorizer::new(
            args.trust_domain.clone(),
            node_agents,
            KubePods::new(client),
        ),
        metrics: metrics.clone(),
        max_ttl: args.max_ttl.into(),
    });
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let metrics_listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("--metrics-listen {}", args.metrics_listen))?;
    info!(
        grpc = %listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        roots = ca.root_certs().len(),
        node_agents = ?args.node_agent,
        "sockmesh ca serving Istio's CA API"
    );
    let metrics_task = tokio::spawn(metrics.serve(metrics_listener));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        () = grpc::serve(listener, tls, service) => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    metrics_task.abort();
    Ok(())
}
