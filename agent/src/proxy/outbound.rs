//! Outbound: a pod's connection redirected by connect4/6 to its outbound listener.
use std::{net::SocketAddr, sync::Arc};

use sockmesh_common::ConnKey;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::{Proxy, forward::forward, upstream::connect_in};
use crate::{capture::addr_key, workload::EnrolledPod};

/// Why an outbound connection was refused (the client sees a reset).
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("no original destination recorded for client {0} (CONNS miss): refusing")]
    NoOriginalDst(SocketAddr),
    #[error("cgroup {0} is not an enrolled workload: refusing")]
    UnknownCgroup(u64),
    #[error(
        "cgroup {cgroup} belongs to pod {owner}, not to the listener's pod {listener}: refusing"
    )]
    CgroupMismatch {
        cgroup: u64,
        owner: String,
        listener: String,
    },
    #[error("upstream {0}: {1}")]
    Upstream(SocketAddr, std::io::Error),
}

/// Accepts the pod's redirected connections until the task is aborted (pod unenrolled).
pub async fn serve(listener: TcpListener, pod: Arc<EnrolledPod>, proxy: Arc<Proxy>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (pod, proxy) = (pod.clone(), proxy.clone());
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, peer, &pod, &proxy).await {
                        warn!(pod = %pod.spec.key(), client = %peer, error = %e, "outbound connection failed");
                    }
                });
            }
            Err(e) => warn!(pod = %pod.spec.key(), error = %e, "outbound accept failed"),
        }
    }
}

async fn handle(
    mut downstream: TcpStream,
    peer: SocketAddr,
    pod: &EnrolledPod,
    proxy: &Proxy,
) -> Result<(), OutboundError> {
    let key = ConnKey {
        netns_cookie: pod.netns_cookie,
        ip: addr_key(peer.ip()),
        port: peer.port(),
        _pad: [0; 6],
    };
    let orig = proxy
        .capture
        .original_dst(&key)
        .ok_or(OutboundError::NoOriginalDst(peer))?;
    let source = proxy
        .workloads
        .get(orig.cgroup_id)
        .ok_or(OutboundError::UnknownCgroup(orig.cgroup_id))?;
    debug!(pod = %source.spec.key(), client = %peer, orig_dst = %orig.addr, cgroup_id = orig.cgroup_id, "outbound captured");
    if source.id != pod.id {
        return Err(OutboundError::CgroupMismatch {
            cgroup: orig.cgroup_id,
            owner: source.spec.key(),
            listener: pod.spec.key(),
        });
    }
    let mut upstream = connect_in(&source.netns, orig.addr, proxy.connect_timeout)
        .await
        .map_err(|e| OutboundError::Upstream(orig.addr, e))?;
    match forward(&mut downstream, &mut upstream).await {
        Ok(t) => {
            debug!(pod = %source.spec.key(), dst = %orig.addr, sent = t.to_upstream, received = t.to_downstream, "outbound closed")
        }
        Err(e) => {
            debug!(pod = %source.spec.key(), dst = %orig.addr, error = %e, "outbound ended with error")
        }
    }
    Ok(())
}
