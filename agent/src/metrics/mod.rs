//! Prometheus metrics: Istio's TCP metrics (same names and labels, so Istio/Kiali dashboards work
//! unchanged) and sockmesh's own. One registry per agent, encoded on scrape.
mod bpf;
mod connection;
mod labels;

use std::sync::Arc;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

pub use bpf::Reader;
pub use connection::ConnectionMetrics;
pub use labels::{
    CaRequestLabels, ConnectionLabels, HandshakeLabels, IdentityLabels, PolicyLabels,
    RefusalReason, RefusedLabels, ReloadLabels, ReloadResult, Reporter, ResponseFlags,
    SecurityPolicy, UNKNOWN,
};

use crate::flow::WireMode;

/// Content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric the agent exports. Cheap to share (`Arc<Metrics>`); all updates take `&self`.
pub struct Metrics {
    registry: Registry,
    tcp: connection::TcpMetrics,
    handshake_failures: Family<HandshakeLabels, Counter>,
    ca_requests: Family<CaRequestLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    certificate_expiry: Family<IdentityLabels, Gauge>,
    enrolled_workloads: Gauge,
    config_reloads: Family<ReloadLabels, Counter>,
    access_log_dropped: Counter,
    dry_run_denials: Family<PolicyLabels, Counter>,
    revoked: Family<PolicyLabels, Counter>,
    bpf: Arc<bpf::BpfCollector>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let tcp = connection::TcpMetrics::default();
        tcp.register(&mut registry);
        let handshake_failures = Family::default();
        registry.register(
            "sockmesh_handshake_failures",
            "mTLS handshakes that failed, by reason",
            Family::clone(&handshake_failures),
        );
        let refused = Family::default();
        registry.register(
            "sockmesh_refused_connections",
            "Connections the proxy closed without forwarding, by reason and mode on the wire",
            Family::clone(&refused),
        );
        let ca_requests = Family::default();
        registry.register(
            "sockmesh_ca_requests",
            "Certificate requests to the remote CA (--ca-addr), by result",
            Family::clone(&ca_requests),
        );
        let certificate_expiry = Family::default();
        registry.register(
            "sockmesh_certificate_expiry_seconds",
            "Expiry (not-after) of each workload identity's certificate, in Unix seconds",
            Family::clone(&certificate_expiry),
        );
        let enrolled_workloads = Gauge::default();
        registry.register(
            "sockmesh_enrolled_workloads",
            "Pods currently enrolled (captured) on this node",
            enrolled_workloads.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "sockmesh_config_reloads",
            "Configuration loads, by result",
            Family::clone(&config_reloads),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "sockmesh_access_log_dropped_lines",
            "Access-log lines dropped because the writer fell behind",
            access_log_dropped.clone(),
        );
        let dry_run_denials = Family::default();
        registry.register(
            "sockmesh_authorization_dry_run_denials",
            "Connections a dry-run AuthorizationPolicy would have denied (they were not denied)",
            Family::clone(&dry_run_denials),
        );
        let revoked = Family::default();
        registry.register(
            "sockmesh_authorization_revoked_connections",
            "Open connections closed because a changed AuthorizationPolicy denies them",
            Family::clone(&revoked),
        );
        let bpf = Arc::new(bpf::BpfCollector::default());
        registry.register_collector(Box::new(bpf.clone()));
        Self {
            registry,
            tcp,
            handshake_failures,
            ca_requests,
            refused,
            certificate_expiry,
            enrolled_workloads,
            config_reloads,
            access_log_dropped,
            dry_run_denials,
            revoked,
            bpf,
        }
    }

    /// Counts a connection as opened; keep the handle until the connection closes.
    pub fn open_connection(&self, labels: &ConnectionLabels) -> ConnectionMetrics {
        self.tcp.open(labels)
    }

    /// A connection refused before forwarding: opened and closed at once with `labels`'s flags
    /// (as Envoy reports it), plus `sockmesh_refused_connections_total{reason,mode}`.
    pub fn connection_refused(
        &self,
        labels: &ConnectionLabels,
        reason: RefusalReason,
        mode: WireMode,
    ) {
        drop(self.tcp.open(labels));
        self.refused
            .get_or_create(&RefusedLabels { reason, mode })
            .inc();
    }

    /// One certificate request to the remote CA ended with `result` (see [`CaRequestLabels`]).
    pub fn ca_request(&self, result: &'static str) {
        self.ca_requests
            .get_or_create(&CaRequestLabels { result })
            .inc();
    }

    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&HandshakeLabels { reason })
            .inc();
    }

    /// Records `identity`'s certificate expiry (Unix seconds); call on every issue or rotation.
    pub fn set_certificate_expiry(&self, identity: &str, not_after_unix: i64) {
        self.certificate_expiry
            .get_or_create(&IdentityLabels {
                identity: identity.to_owned(),
            })
            .set(not_after_unix);
    }

    /// Drops `identity`'s series once no enrolled pod uses it, keeping cardinality bounded.
    pub fn remove_certificate(&self, identity: &str) {
        self.certificate_expiry.remove(&IdentityLabels {
            identity: identity.to_owned(),
        });
    }

    pub fn set_enrolled_workloads(&self, count: usize) {
        self.enrolled_workloads
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn config_reloaded(&self, result: ReloadResult) {
        self.config_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// A connection a dry-run policy would have denied.
    pub fn dry_run_denied(&self, policy: &str) {
        let labels = PolicyLabels {
            policy: policy.to_owned(),
        };
        self.dry_run_denials.get_or_create(&labels).inc();
    }

    /// An open connection closed because `policy` (or the lack of a matching ALLOW) denies it now.
    pub fn connection_revoked(&self, policy: &str) {
        let labels = PolicyLabels {
            policy: policy.to_owned(),
        };
        self.revoked.get_or_create(&labels).inc();
    }

    /// Counter the access-log writer increments when it drops a line.
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// Source of `sockmesh_bpf_events_total{event}`, e.g. `move || capture.stats()`.
    pub fn set_bpf_events(&self, reader: Reader) {
        *self
            .bpf
            .events
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reader);
    }

    /// Source of `sockmesh_bpf_map_entries{map}`: `(map name, entry count)` pairs.
    pub fn set_bpf_map_entries(&self, reader: Reader) {
        *self
            .bpf
            .map_entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reader);
    }

    /// The scrape body (OpenMetrics text, see [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; label values are plain strings.
        encode(&mut out, &self.registry).expect("encoding metrics into a String");
        out
    }
}

#[cfg(test)]
mod tests;
