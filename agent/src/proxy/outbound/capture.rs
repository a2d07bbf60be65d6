//! The capture stage: the original destination of an accepted app socket (recorded by sock_ops in
//! `CONNS`) and the workload that made it, verified through the socket's cgroup.
use sockmesh_common::ConnKey;
use tracing::debug;

use super::request::{Accepted, Captured};
use crate::{
    capture::addr_key,
    metrics::RefusalReason,
    proxy::{
        Proxy,
        refusal::{Refusal, Refused},
    },
};

/// The accepted connection with its original destination; refused when the capture maps do not
/// know the socket or its cgroup is not the listener's pod.
pub fn recover(proxy: &Proxy, accepted: Accepted) -> Result<Captured, Refused> {
    let pod = &accepted.source;
    let peer = accepted.client;
    let key = ConnKey {
        netns_cookie: pod.netns_cookie,
        ip: addr_key(peer.ip()),
        port: peer.port(),
        _pad: [0; 6],
    };
    let Some(orig) = proxy.capture.original_dst(&key) else {
        let why = format!(
            "no original destination recorded for client {peer} in netns cookie {}",
            pod.netns_cookie
        );
        let refusal = Refusal::new(RefusalReason::NoOriginalDst, why);
        return Err(Refused::new(accepted.info(), refusal));
    };
    debug!(pod = %pod.spec.key(), client = %peer, orig_dst = %orig.addr, cgroup_id = orig.cgroup_id, "outbound captured");
    let captured = Captured {
        source: accepted.source,
        client: peer,
        original: orig.addr,
    };
    let refusal = match proxy.workloads.get(orig.cgroup_id) {
        Some(owner) if owner.id == captured.source.id => return Ok(captured),
        None => Refusal::new(
            RefusalReason::UnknownWorkload,
            format!("cgroup {} is not an enrolled workload", orig.cgroup_id),
        ),
        Some(owner) => Refusal::new(
            RefusalReason::WorkloadMismatch,
            format!(
                "cgroup {} belongs to {}, not to {}",
                orig.cgroup_id,
                owner.spec.key(),
                captured.source.spec.key()
            ),
        ),
    };
    Err(Refused::new(captured.info(), refusal))
}
