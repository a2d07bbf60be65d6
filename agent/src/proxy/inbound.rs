//! Inbound: connections for a pod's addresses, handed to its inbound listener by sk_lookup. The
//! accepted socket's local address is the original destination. The first bytes are peeked to
//! classify the connection, and the pod's PeerAuthentication mode on the target port decides.
use std::{net::SocketAddr, sync::Arc};

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::{
    Proxy,
    accept::{accept_loop, refuse},
    buffered::buffered,
    forward::{forward, observe},
    pooled,
    splice::splice_bidirectional,
    upstream::connect_in,
    workload_ref,
};
use crate::{
    flow::{ConnectionInfo, Destination, Direction, Source, WireMode, WorkloadRef},
    metrics::RefusalReason,
    policy::InboundMode,
    tls::{detect::Detected, detect::detect, mesh},
    workload::EnrolledPod,
};

/// Serves the pod's listener until the task is aborted.
pub async fn serve(listener: TcpListener, pod: Arc<EnrolledPod>, proxy: Arc<Proxy>) {
    accept_loop(
        listener,
        pod,
        proxy,
        |stream, peer, pod, proxy| async move {
            handle(stream, peer, &pod, &proxy).await;
        },
    )
    .await;
}

async fn handle(downstream: TcpStream, peer: SocketAddr, pod: &EnrolledPod, proxy: &Proxy) {
    let _ = downstream.set_nodelay(true);
    let Ok(dst) = downstream.local_addr() else {
        return;
    };
    debug!(pod = %pod.spec.key(), client = %peer, dst = %dst, "inbound captured");
    let snapshot = proxy.config.current();
    let source_workload = snapshot.pod_by_ip(peer.ip()).map(|p| WorkloadRef {
        namespace: p.namespace().to_owned(),
        name: p.name().to_owned(),
        pod: p.name().to_owned(),
    });
    let mut info = ConnectionInfo {
        direction: Direction::Inbound,
        mode: WireMode::Plaintext,
        source: Source {
            addr: peer,
            workload: source_workload,
            principal: None,
        },
        destination: Destination {
            original: Some(dst),
            endpoint: Some(dst),
            service: None,
            workload: Some(workload_ref(pod)),
            principal: Some(pod.identity.id().to_string()),
        },
    };
    // A pod the configuration no longer knows gets the strictest treatment: fail closed.
    let mode = snapshot
        .inbound(&pod.key, dst.port())
        .map_or(InboundMode::Strict, |i| i.mode);
    drop(snapshot);
    if mode == InboundMode::Disable {
        return pass_through(downstream, info, pod, proxy).await;
    }
    let detected = match detect(&downstream, proxy.timeouts.detect).await {
        Ok(d) => d,
        Err(e) => return debug!(client = %peer, error = %e, "inbound closed during detection"),
    };
    match (detected, mode) {
        (Detected::MeshTls { .. }, _) => terminate(downstream, info, pod, proxy).await,
        (other, InboundMode::Strict) => {
            let why = format!("STRICT on {dst}: {} from {peer} refused", describe(&other));
            refuse(
                proxy,
                &downstream,
                info,
                RefusalReason::PlaintextRejected,
                why,
            );
        }
        (Detected::OtherTls { .. }, _) => {
            info.mode = WireMode::PassthroughTls;
            pass_through(downstream, info, pod, proxy).await;
        }
        (Detected::Plaintext | Detected::Empty, _) => {
            pass_through(downstream, info, pod, proxy).await
        }
    }
}

fn describe(d: &Detected) -> &'static str {
    match d {
        Detected::MeshTls { .. } => "mesh mTLS",
        Detected::OtherTls { .. } => "TLS without the mesh ALPN",
        Detected::Plaintext => "plaintext",
        Detected::Empty => "a connection that sent nothing",
    }
}

/// Terminates mesh mTLS with the pod's identity (client certificate required, chaining to the
/// mesh root) and forwards the decrypted bytes to the app.
async fn terminate(
    downstream: TcpStream,
    mut info: ConnectionInfo,
    pod: &EnrolledPod,
    proxy: &Proxy,
) {
    let accepted = tokio::time::timeout(
        proxy.timeouts.handshake,
        mesh::accept(pod.identity.server_config(), buffered(downstream)),
    )
    .await;
    let (tls, peer_id) = match accepted {
        Ok(Ok(ok)) => ok,
        Ok(Err(e)) => {
            proxy.telemetry.metrics.handshake_failed("downstream");
            warn!(src = %info.source.addr, error = %e, "inbound mTLS handshake failed");
            return proxy
                .telemetry
                .refuse(info, RefusalReason::DownstreamHandshake, e);
        }
        Err(_) => {
            proxy.telemetry.metrics.handshake_failed("timeout");
            return proxy.telemetry.refuse(
                info,
                RefusalReason::DownstreamHandshake,
                "handshake timed out",
            );
        }
    };
    info.mode = WireMode::MutualTls;
    info.source.principal = Some(peer_id.to_string());
    if tls.get_ref().1.alpn_protocol() == Some(mesh::POOLED_ALPN) {
        return pooled::inbound::serve(tls, info, pod, proxy).await;
    }
    let dst = info.destination.original.expect("set above");
    let mut app = match connect_in(&pod.netns, dst, proxy.timeouts.connect).await {
        Ok(app) => app,
        Err(e) => {
            return proxy.telemetry.refuse(
                info,
                RefusalReason::UpstreamConnect,
                format!("app {dst}: {e}"),
            );
        }
    };
    let mut conn = proxy.telemetry.open(info);
    let mut down = conn.count(tls);
    observe(&mut conn, forward(&mut down, &mut app)).await;
}

/// Forwards the connection's bytes to the app as they are.
async fn pass_through(
    downstream: TcpStream,
    info: ConnectionInfo,
    pod: &EnrolledPod,
    proxy: &Proxy,
) {
    let dst = info.destination.original.expect("set above");
    let app = match connect_in(&pod.netns, dst, proxy.timeouts.connect).await {
        Ok(app) => app,
        Err(e) => {
            return refuse(
                proxy,
                &downstream,
                info,
                RefusalReason::UpstreamConnect,
                format!("app {dst}: {e}"),
            );
        }
    };
    let mut conn = proxy.telemetry.open(info);
    let down = conn.count(downstream);
    observe(&mut conn, splice_bidirectional(&down, &app)).await;
}
