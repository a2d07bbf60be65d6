//! Inbound admission: the one decision every way a connection can arrive goes through
//! (dedicated mesh mTLS, plaintext or other TLS, tunnel streams) before a byte reaches the app.
//! A new arrival path calls [`admit`]; a new rule goes here, and only here.
use super::request::{Arrival, InboundRequest};
use crate::{metrics::RefusalReason, policy::InboundMode, proxy::refusal::Refusal};

/// Admits the request or says why not.
///
/// PeerAuthentication: STRICT admits only mesh mTLS; PERMISSIVE admits everything; DISABLE
/// admits what it does not inspect, and refuses tunnel streams, which would terminate mesh mTLS
/// the port's mode says must not be terminated.
pub fn admit(request: &InboundRequest) -> Result<(), Refusal> {
    peer_authentication(request)
}

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
