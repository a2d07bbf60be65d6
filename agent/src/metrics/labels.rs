//! Label sets of the Istio TCP metrics and sockmesh's own metrics. Every label value comes from a
//! bounded set (workloads, identities, services or a fixed enum): nothing per connection.
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use std::fmt::Write as _;

use crate::flow::{ConnectionInfo, Direction, WireMode, WorkloadRef};

/// Value Istio uses for a label it cannot fill.
pub const UNKNOWN: &str = "unknown";

/// Which proxy reports: the client side (`source`, outbound) or the server side (`destination`, inbound).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Reporter {
    source,
    destination,
}

/// Istio's `connection_security_policy`: only a verified mTLS session counts as `mutual_tls`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SecurityPolicy {
    mutual_tls,
    none,
}

/// Envoy/Istio-style `response_flags`, a small documented subset:
/// `-` forwarded normally; `DENY` refused by authorization policy or the workload's mTLS mode
/// (ztunnel's value for policy denials); `NR` no route: the capture state has no original
/// destination or source workload for the socket; `UF` upstream connection failure (TCP connect
/// or the outbound mTLS handshake); `DC` the downstream side failed before forwarding started
/// (e.g. the connecting peer's mTLS handshake failed).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ResponseFlags {
    None,
    Deny,
    NoRoute,
    UpstreamFailure,
    DownstreamFailure,
    /// A connection limit was reached (Envoy's overflow flag).
    Overflow,
}

impl ResponseFlags {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "-",
            Self::Deny => "DENY",
            Self::NoRoute => "NR",
            Self::UpstreamFailure => "UF",
            Self::DownstreamFailure => "DC",
            Self::Overflow => "UO",
        }
    }
}

impl EncodeLabelValue for ResponseFlags {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Why the proxy refused (closed without forwarding) a connection. Maps to a response flag.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// CONNS has no original destination for the client socket.
    NoOriginalDst,
    /// The socket's cgroup is not an enrolled workload.
    UnknownWorkload,
    /// The socket's cgroup belongs to another pod than the listener's.
    WorkloadMismatch,
    /// An authorization policy denied the connection.
    PolicyDenied,
    /// Plaintext arrived for a workload whose mode requires mTLS.
    PlaintextRejected,
    /// TCP connect to the upstream failed or timed out.
    UpstreamConnect,
    /// The outbound mTLS handshake with the upstream failed.
    UpstreamHandshake,
    /// The inbound mTLS handshake with the connecting peer failed.
    DownstreamHandshake,
    /// A connection limit (total, per source, passthrough) was reached.
    ConnectionLimit,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoOriginalDst => "no_original_dst",
            Self::UnknownWorkload => "unknown_workload",
            Self::WorkloadMismatch => "workload_mismatch",
            Self::PolicyDenied => "policy_denied",
            Self::PlaintextRejected => "plaintext_rejected",
            Self::UpstreamConnect => "upstream_connect",
            Self::UpstreamHandshake => "upstream_handshake",
            Self::DownstreamHandshake => "downstream_handshake",
            Self::ConnectionLimit => "connection_limit",
        }
    }

    pub fn response_flags(self) -> ResponseFlags {
        match self {
            Self::NoOriginalDst | Self::UnknownWorkload | Self::WorkloadMismatch => {
                ResponseFlags::NoRoute
            }
            Self::PolicyDenied | Self::PlaintextRejected => ResponseFlags::Deny,
            Self::UpstreamConnect | Self::UpstreamHandshake => ResponseFlags::UpstreamFailure,
            Self::DownstreamHandshake => ResponseFlags::DownstreamFailure,
            Self::ConnectionLimit => ResponseFlags::Overflow,
        }
    }
}

impl EncodeLabelValue for RefusalReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for WireMode {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Istio's standard TCP label set (the subset sockmesh can fill). Built once per connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub reporter: Reporter,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_service: String,
    pub destination_principal: String,
    pub connection_security_policy: SecurityPolicy,
    pub response_flags: ResponseFlags,
}

impl ConnectionLabels {
    /// Labels for a connection as the proxy on `info.direction`'s side reports it.
    pub fn new(info: &ConnectionInfo, response_flags: ResponseFlags) -> Self {
        let (src_wl, src_ns) = workload_labels(info.source.workload.as_ref());
        let (dst_wl, dst_ns) = workload_labels(info.destination.workload.as_ref());
        Self {
            reporter: match info.direction {
                Direction::Outbound => Reporter::source,
                Direction::Inbound => Reporter::destination,
            },
            source_workload: src_wl,
            source_workload_namespace: src_ns,
            source_principal: or_unknown(info.source.principal.as_deref()),
            destination_workload: dst_wl,
            destination_workload_namespace: dst_ns,
            destination_service: or_unknown(info.destination.service.as_deref()),
            destination_principal: or_unknown(info.destination.principal.as_deref()),
            connection_security_policy: match info.mode {
                WireMode::MutualTls => SecurityPolicy::mutual_tls,
                WireMode::Plaintext | WireMode::PassthroughTls | WireMode::OriginatedTls => {
                    SecurityPolicy::none
                }
            },
            response_flags,
        }
    }
}

fn workload_labels(w: Option<&WorkloadRef>) -> (String, String) {
    match w {
        Some(w) => (w.name.clone(), w.namespace.clone()),
        None => (UNKNOWN.to_owned(), UNKNOWN.to_owned()),
    }
}

fn or_unknown(v: Option<&str>) -> String {
    v.unwrap_or(UNKNOWN).to_owned()
}

/// `sockmesh_refused_connections_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub reason: RefusalReason,
    pub mode: WireMode,
}

/// `sockmesh_handshake_failures_total` labels. `reason` is a `&'static str` so the set of values
/// is fixed at compile time (e.g. `bad_certificate`, `unknown_ca`, `identity_mismatch`, `timeout`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub reason: &'static str,
}

/// `sockmesh_ca_requests` labels: how a certificate request to a remote CA ended (`issued`,
/// `refused`, `unavailable`, `invalid_response`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaRequestLabels {
    pub result: &'static str,
}

/// `sockmesh_certificate_expiry_seconds` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    pub identity: String,
}

/// Outcome of a configuration (re)load.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    success,
    failure,
}

/// `sockmesh_authorization_*` labels: the AuthorizationPolicy that decided, as `namespace/name`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

/// `sockmesh_config_reloads_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: ReloadResult,
}
