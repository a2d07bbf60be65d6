//! Where this node's workload certificates come from, chosen by `sockmesh run`'s CA flags:
//! `--ca-addr` → a remote CA over Istio's CA API (istiod, or `sockmesh ca`; no signing key on the
//! node); otherwise the local plug-in CA in `--ca-dir` (the one-VM default, created once when the
//! directory is empty; the only mode in which a node holds a key that can sign).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::ca::MeshCa;
use super::ca_client::{CaClient, CaClientConfig};
use super::issuer::Issuer;
use super::manager::{CertManager, IssueCert};
use crate::metrics::Metrics;
use crate::spiffe::TrustDomains;
use crate::tls::bundle::TrustBundle;
use crate::tls::peer::MeshTrust;

/// The CA flags of `sockmesh run`.
#[derive(Debug, clap::Args)]
pub struct CaFlags {
    /// Remote CA speaking Istio's CA API, `host:port`. In cluster mode the DaemonSet passes
    /// istiod's `istiod.istio-system.svc:15012` (or `sockmesh-ca.sockmesh-system.svc:15012` for
    /// `sockmesh ca`). Without it the local plug-in CA in `--ca-dir` signs.
    #[arg(long, requires = "ca_root")]
    pub ca_addr: Option<String>,
    /// PEM roots the remote CA's TLS certificate chains to (`root-cert.pem` of Istio's
    /// `istio-ca-root-cert` ConfigMap); also the mesh trust bundle until the CA's first answer.
    #[arg(long)]
    pub ca_root: Option<PathBuf>,
    /// The agent's projected service-account token (audience `istio-ca`) for the remote CA.
    #[arg(long, default_value = "/var/run/secrets/tokens/istio-token")]
    pub ca_token: PathBuf,
    /// `ClusterID` header sent to the remote CA (istiod's default cluster is `Kubernetes`).
    #[arg(long, default_value = "Kubernetes")]
    pub ca_cluster_id: String,
    /// Local plug-in CA (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem), used without
    /// `--ca-addr`; created once when empty.
    #[arg(long, default_value = "/etc/cacerts")]
    pub ca_dir: PathBuf,
}

/// The node's certificate cache over the CA the flags select, trusting `domains`.
pub fn cert_manager(
    flags: &CaFlags,
    trust_domain: &str,
    domains: TrustDomains,
    ttl: Duration,
    metrics: Arc<Metrics>,
) -> anyhow::Result<CertManager> {
    let (issuer, bundle): (Arc<dyn IssueCert>, TrustBundle) = match &flags.ca_addr {
        Some(addr) => {
            let path = flags
                .ca_root
                .as_ref()
                .context("--ca-addr needs --ca-root")?;
            let server_roots = read_roots(path).context("--ca-root")?;
            let bundle = TrustBundle::new(server_roots.clone()).context("--ca-root")?;
            let client = CaClient::new(CaClientConfig {
                addr: addr.clone(),
                server_roots,
                token_path: flags.ca_token.clone(),
                cluster_id: flags.ca_cluster_id.clone(),
                bundle: bundle.clone(),
                metrics,
            })?;
            tracing::info!(ca = %addr, token = %flags.ca_token.display(), "workload certificates from the remote CA; no signing key on this node");
            (Arc::new(client), bundle)
        }
        None => {
            let ca = MeshCa::load_or_create(&flags.ca_dir, trust_domain).context("--ca-dir")?;
            let bundle = TrustBundle::new(ca.roots()).context("--ca-dir")?;
            tracing::info!(dir = %flags.ca_dir.display(), "workload certificates from the local plug-in CA");
            (Arc::new(Issuer::new(Arc::new(ca))), bundle)
        }
    };
    Ok(CertManager::new(
        issuer,
        MeshTrust::new(bundle, domains),
        ttl,
    ))
}

fn read_roots(path: &std::path::Path) -> anyhow::Result<Arc<RootCertStore>> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.with_context(|| format!("{}: bad PEM", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{}: not a trust anchor", path.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "{}: no CERTIFICATE", path.display());
    Ok(Arc::new(roots))
}
