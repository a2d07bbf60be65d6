//! Per-identity certificate cache with prebuilt rustls configs and half-life renewal.
//!
//! A certificate is issued when the first pod with an identity enrolls ([`CertManager::acquire`]),
//! shared by every pod with that identity on the node, renewed in the background at half-life and
//! dropped when the last such pod leaves ([`CertManager::release`]). Each renewal builds the server
//! and client configs once and swaps them in atomically: open connections keep the config they were
//! made with, new handshakes get the new certificate.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use futures::FutureExt as _;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore};
use rustls::server::ProducesTickets;
use tokio::task::JoinHandle;

use super::issuer::{CertInfo, IssueError, Issuer, WorkloadCert};
use crate::spiffe::SpiffeId;
use crate::tls::mesh::{self, MeshClientConfig, MeshServerConfig, MeshTlsError};
use crate::tls::peer::MeshTrust;

/// Sessions kept per source identity, across destinations (rustls keys them by server name).
const SESSIONS_PER_IDENTITY: usize = 256;
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(150);

/// A certificate on its way: ready at once from the local CA, a gRPC call to a remote one.
pub type IssueFuture = Pin<Box<dyn Future<Output = Result<WorkloadCert, IssueError>> + Send>>;

/// Where certificates come from: the local plug-in CA ([`Issuer`]), a remote CA over Istio's CA
/// API (`super::ca_client::CaClient`) or a test double.
pub trait IssueCert: Send + Sync + 'static {
    fn issue(&self, id: &SpiffeId, ttl: Duration) -> IssueFuture;
}

impl IssueCert for Issuer {
    fn issue(&self, id: &SpiffeId, ttl: Duration) -> IssueFuture {
        Box::pin(std::future::ready(Issuer::issue(self, id, ttl)))
    }
}

/// Waits for `issuing` from synchronous code: at once if it is ready (the local CA), else on this
/// thread with the runtime's other tasks moved off it (`block_in_place`; a multi-thread runtime,
/// which the agent always runs).
fn wait_issued(issuing: IssueFuture) -> Result<WorkloadCert, IssueError> {
    let mut issuing = issuing;
    match (&mut issuing).now_or_never() {
        Some(result) => result,
        None => tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(issuing)),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Issue(#[from] IssueError),
    #[error(transparent)]
    Tls(#[from] MeshTlsError),
    #[error("creating the session-ticket key for {id}: {source}")]
    Ticketer { id: SpiffeId, source: rustls::Error },
}

/// One certificate generation of an identity with the configs built from it.
pub struct IdentityConfigs {
    cert: WorkloadCert,
    server: MeshServerConfig,
    client: MeshClientConfig,
}

impl IdentityConfigs {
    /// Inbound config: accept with [`mesh::accept`].
    pub fn server(&self) -> MeshServerConfig {
        self.server.clone()
    }

    /// Outbound config: connect with [`mesh::connect`].
    pub fn client(&self) -> MeshClientConfig {
        self.client.clone()
    }

    pub fn info(&self) -> &CertInfo {
        &self.cert.info
    }

    pub fn not_after(&self) -> SystemTime {
        self.cert.not_after
    }
}

/// A workload identity on this node; the proxy loads its current configs per connection (cheap).
pub struct WorkloadIdentity {
    id: SpiffeId,
    trust: MeshTrust,
    current: ArcSwap<IdentityConfigs>,
    sessions: Arc<dyn ClientSessionStore>,
    ticketer: Arc<dyn ProducesTickets>,
}

impl WorkloadIdentity {
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The current generation; hold the returned `Arc` for one connection's set-up.
    pub fn current(&self) -> Arc<IdentityConfigs> {
        self.current.load_full()
    }

    pub fn server_config(&self) -> MeshServerConfig {
        self.current.load().server()
    }

    pub fn client_config(&self) -> MeshClientConfig {
        self.current.load().client()
    }

    fn build(&self, cert: WorkloadCert) -> Result<IdentityConfigs, MeshTlsError> {
        build_configs(cert, &self.trust, &self.sessions, &self.ticketer)
    }
}

fn build_configs(
    cert: WorkloadCert,
    trust: &MeshTrust,
    sessions: &Arc<dyn ClientSessionStore>,
    ticketer: &Arc<dyn ProducesTickets>,
) -> Result<IdentityConfigs, MeshTlsError> {
    let (id, chain, key) = (&cert.id, &cert.chain, &cert.key);
    let server = mesh::server_config(id, chain, key, trust, ticketer.clone())?;
    let client = mesh::client_config(id, chain, key, trust, sessions.clone())?;
    Ok(IdentityConfigs {
        cert,
        server,
        client,
    })
}

struct Entry {
    users: usize,
    identity: Arc<WorkloadIdentity>,
    renewer: JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

/// The node's certificate cache; cheap to clone.
#[derive(Clone)]
pub struct CertManager {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: Arc<dyn IssueCert>,
    trust: MeshTrust,
    ttl: Duration,
    entries: Mutex<HashMap<SpiffeId, Entry>>,
}

impl CertManager {
    /// `trust` is what peers must chain to and which trust domains they may be in; `ttl` is the
    /// workload cert lifetime.
    pub fn new(issuer: Arc<dyn IssueCert>, trust: MeshTrust, ttl: Duration) -> Self {
        CertManager {
            inner: Arc::new(Inner {
                issuer,
                trust,
                ttl,
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Registers one more user (pod) of `id`, issuing its certificate now if it is the first.
    /// Must run inside a tokio runtime (the renewal task is spawned there).
    pub fn acquire(&self, id: &SpiffeId) -> Result<Arc<WorkloadIdentity>, ManagerError> {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(id) {
            entry.users += 1;
            return Ok(entry.identity.clone());
        }
        let ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|source| ManagerError::Ticketer {
                id: id.clone(),
                source,
            })?;
        let sessions: Arc<dyn ClientSessionStore> =
            Arc::new(ClientSessionMemoryCache::new(SESSIONS_PER_IDENTITY));
        let cert = wait_issued(self.inner.issuer.issue(id, self.inner.ttl))?;
        let configs = build_configs(cert, &self.inner.trust, &sessions, &ticketer)?;
        tracing::info!(identity = %id, serial = %configs.info().serial, "workload certificate issued");
        let identity = Arc::new(WorkloadIdentity {
            id: id.clone(),
            trust: self.inner.trust.clone(),
            current: ArcSwap::from_pointee(configs),
            sessions,
            ticketer,
        });
        let renewer = tokio::spawn(renew(
            identity.clone(),
            self.inner.issuer.clone(),
            self.inner.ttl,
        ));
        entries.insert(
            id.clone(),
            Entry {
                users: 1,
                identity: identity.clone(),
                renewer,
            },
        );
        Ok(identity)
    }

    /// Drops one user of `id`; the last one stops renewal and forgets the certificate.
    /// Returns whether the identity was forgotten.
    pub fn release(&self, id: &SpiffeId) -> bool {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(id) else {
            return false;
        };
        entry.users -= 1;
        if entry.users > 0 {
            return false;
        }
        entries.remove(id);
        tracing::info!(identity = %id, "last workload left, certificate dropped");
        true
    }

    /// The identity if some enrolled pod holds it; connections for unknown identities must be refused.
    pub fn get(&self, id: &SpiffeId) -> Option<Arc<WorkloadIdentity>> {
        self.lock().get(id).map(|e| e.identity.clone())
    }

    /// Current certificates, sorted by identity, for the admin endpoint.
    pub fn cert_infos(&self) -> Vec<CertInfo> {
        let mut infos: Vec<CertInfo> = self
            .lock()
            .values()
            .map(|e| e.identity.current().info().clone())
            .collect();
        infos.sort_by(|a, b| a.identity.cmp(&b.identity));
        infos
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SpiffeId, Entry>> {
        self.inner
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Renews at half-life; on failure keeps the current certificate (valid until its expiry) and
/// retries with exponential backoff.
async fn renew(identity: Arc<WorkloadIdentity>, issuer: Arc<dyn IssueCert>, ttl: Duration) {
    let mut backoff = MIN_BACKOFF;
    let mut next = identity.current().cert.refresh_at();
    loop {
        let wait = next.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait).await;
        let renewed = issuer
            .issue(&identity.id, ttl)
            .await
            .map_err(ManagerError::from)
            .and_then(|cert| identity.build(cert).map_err(ManagerError::from));
        match renewed {
            Ok(configs) => {
                tracing::info!(identity = %identity.id, serial = %configs.info().serial, "workload certificate renewed");
                next = configs.cert.refresh_at();
                identity.current.store(Arc::new(configs));
                backoff = MIN_BACKOFF;
            }
            Err(error) => {
                let current = identity.current();
                tracing::warn!(
                    identity = %identity.id,
                    %error,
                    still_valid_until = %current.info().not_after,
                    expired = current.cert.is_expired(),
                    retry_in = ?backoff,
                    "workload certificate renewal failed, keeping the current one"
                );
                next = SystemTime::now() + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
