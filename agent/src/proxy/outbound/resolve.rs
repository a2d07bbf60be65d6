//! The resolve stage: the policy's answer for the original destination and the endpoint the
//! proxy picks for it.
use super::request::{Captured, OutboundRequest};
use crate::{
    metrics::RefusalReason,
    proxy::{
        Proxy,
        refusal::{Refusal, Refused},
    },
};

/// The captured connection with its route; refused when the destination has no endpoint with an
/// address (a Service without ready endpoints).
pub fn resolve(proxy: &Proxy, captured: Captured) -> Result<OutboundRequest, Refused> {
    let snapshot = proxy.config.current();
    let outbound = snapshot.outbound(Some(&captured.source.key), captured.original);
    let route = proxy.balancer.route(outbound, captured.original, &snapshot);
    drop(snapshot);
    match route {
        Some(route) => Ok(OutboundRequest {
            source: captured.source,
            client: captured.client,
            original: captured.original,
            route,
        }),
        None => {
            let why = format!("{} has no endpoint with an address", captured.original);
            let refusal = Refusal::new(RefusalReason::UpstreamConnect, why);
            Err(Refused::new(captured.info(), refusal))
        }
    }
}
