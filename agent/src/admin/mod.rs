//! HTTP servers: the admin API (loopback only: it exposes identities and live connections),
//! Prometheus metrics, and readiness for the kubelet.
mod api;
pub mod client;
pub(crate) mod http;
mod model;
mod readiness;

use std::{io, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, task::JoinHandle};

pub use api::AdminState;
pub use model::{CertificateInfo, EnrollmentState, WorkloadStatus};
pub use readiness::{Check, Readiness};

/// The agent's state as the admin API shows it; implemented over the registry, policy and
/// identity stores. Called per request, off the data path.
pub trait AdminSource: Send + Sync + 'static {
    /// The resolved model: workloads, services, policies and effective modes per workload/port.
    fn config_dump(&self) -> serde_json::Value;
    fn workloads(&self) -> Vec<WorkloadStatus>;
    fn certificates(&self) -> Vec<CertificateInfo>;
}

/// Server addresses of `sockmesh run` (flattened into `RunArgs`).
#[derive(Clone, Debug, clap::Args)]
pub struct AdminArgs {
    /// Admin API address; must be loopback.
    #[arg(long = "admin-addr", default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// Prometheus metrics address (`/metrics`).
    #[arg(long = "metrics-addr", default_value = "0.0.0.0:15020")]
    pub metrics: SocketAddr,
    /// Readiness and liveness address (`/healthz/ready`, `/healthz/live`).
    #[arg(long = "readiness-addr", default_value = "0.0.0.0:15021")]
    pub readiness: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "admin address {0} is not loopback: the admin API exposes identities and connections and must never be reachable from pods"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot bind {what} server on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// The running servers; dropping this stops them.
pub struct Servers {
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub readiness_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Binds all three (port 0 picks a free port; see the `*_addr` fields) and serves them on
    /// the current runtime.
    pub async fn start(args: &AdminArgs, state: AdminState) -> Result<Self, AdminError> {
        if !args.admin.ip().is_loopback() {
            return Err(AdminError::NotLoopback(args.admin));
        }
        let admin = bind("admin", args.admin).await?;
        let metrics = bind("metrics", args.metrics).await?;
        let readiness = bind("readiness", args.readiness).await?;
        let local = |what, l: &TcpListener, addr| {
            l.local_addr()
                .map_err(|source| AdminError::Bind { what, addr, source })
        };
        let (admin_addr, metrics_addr, readiness_addr) = (
            local("admin", &admin, args.admin)?,
            local("metrics", &metrics, args.metrics)?,
            local("readiness", &readiness, args.readiness)?,
        );
        let state = Arc::new(state);
        let (m, r) = (state.telemetry.metrics.clone(), state.readiness.clone());
        let tasks = vec![
            tokio::spawn(http::serve(
                admin,
                Arc::new(move |req| api::admin(&state, req)),
            )),
            tokio::spawn(http::serve(
                metrics,
                Arc::new(move |req| api::metrics_endpoint(&m, req)),
            )),
            tokio::spawn(http::serve(
                readiness,
                Arc::new(move |req| api::readiness(&r, req)),
            )),
        ];
        Ok(Self {
            admin_addr,
            metrics_addr,
            readiness_addr,
            tasks,
        })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, AdminError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { what, addr, source })
}

#[cfg(test)]
pub(crate) mod tests;
