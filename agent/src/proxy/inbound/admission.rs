//! Inbound admission: the one decision every way a connection can arrive goes through
//! (dedicated mesh mTLS, plaintext or other TLS, tunnel streams) before a byte reaches the app,
//! and again for open connections when the policies change. A new arrival path calls [`admit`];
//! a new rule goes here, and only here.
use tracing::info;

use super::request::{Arrival, InboundRequest};
use crate::{
    metrics::{Metrics, RefusalReason},
    policy::{AuthzAction, AuthzDecision, AuthzRequest, InboundMode, Snapshot},
    proxy::refusal::Refusal,
};

/// Admits the request or says why not: PeerAuthentication first, then AuthorizationPolicy with
/// the identity the connection arrived with (verified certificate only, never a claim).
pub fn admit(
    snapshot: &Snapshot,
    metrics: &Metrics,
    request: &InboundRequest,
) -> Result<(), Refusal> {
    peer_authentication(request)?;
    let decision = authorize(snapshot, request);
    if let Some(dry_run) = &decision.dry_run
        && dry_run.action == AuthzAction::Deny
        && decision.action == AuthzAction::Allow
    {
        let policy = dry_run.policy.as_deref().unwrap_or("-");
        metrics.dry_run_denied(policy);
        info!(client = %request.client, dst = %request.destination, pod = %request.pod.spec.key(), reason = %dry_run.reason, "dry run: would deny");
    }
    denial(decision).map_or(Ok(()), Err)
}

/// The AuthorizationPolicy decision for the request under `snapshot`.
pub fn authorize(snapshot: &Snapshot, request: &InboundRequest) -> AuthzDecision {
    let principal = request.principal.as_ref().map(ToString::to_string);
    let authz = AuthzRequest {
        principal: principal.as_deref(),
        source_ip: request.client.ip(),
        destination_ip: request.destination.ip(),
        destination_port: request.destination.port(),
        sni: request.sni.as_deref(),
    };
    snapshot.authorize(&request.pod.key, &authz)
}

/// The refusal for a DENY decision.
pub fn denial(decision: AuthzDecision) -> Option<Refusal> {
    (decision.action == AuthzAction::Deny)
        .then(|| Refusal::new(RefusalReason::PolicyDenied, decision.reason))
}

/// PeerAuthentication: STRICT admits only mesh mTLS; PERMISSIVE admits everything; DISABLE
/// admits what it does not inspect, and refuses tunnel streams, which would terminate mesh mTLS
/// the port's mode says must not be terminated.
fn peer_authentication(request: &InboundRequest) -> Result<(), Refusal> {
    let arrival = request.arrival;
    match request.mode {
        InboundMode::Strict if !arrival.is_mesh() => {
            let why = format!(
                "STRICT on {}: {} from {} refused",
                request.destination,
                arrival.describe(),
                request.client
            );
            Err(Refusal::new(RefusalReason::PlaintextRejected, why))
        }
        InboundMode::Disable if arrival == Arrival::TunnelStream => {
            let why = format!(
                "port {} of {} has PeerAuthentication mode DISABLE and does not terminate mesh mTLS",
                request.destination.port(),
                request.pod.spec.key()
            );
            Err(Refusal::new(RefusalReason::PolicyDenied, why))
        }
        _ => Ok(()),
    }
}
