//! Inbound: connections for a pod's addresses, handed to its inbound listener by sk_lookup. The
//! accepted socket's local address is the original destination. In order:
//!
//! 1. accept: the target port's PeerAuthentication mode and the connecting pod → [`InboundRequest`];
//! 2. classify: the first bytes are peeked (not under DISABLE) → [`Arrival`];
//! 3. terminate: mesh mTLS is terminated with the pod's identity, which verifies the client's;
//!    a tunnel goes on stream by stream (`proxy::tunnel::server`);
//! 4. admit (`admission.rs`): the one admission decision, for every arrival path;
//! 5. forward: the app is connected from the pod's netns; telemetry opened once from the request.
mod admission;
mod request;
mod revocation;

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpStream;
use tracing::debug;

use self::{
    admission::admit,
    request::{Arrival, InboundRequest},
};
use super::{
    Proxy,
    io::{
        buffered::{BufferedTcp, buffered},
        forward::{finish, forward, observe, reset},
        splice::splice_bidirectional,
        upstream::connect_in,
    },
    refusal::{self, Refusal, Refused},
    tunnel::server::{self as tunnel_server, Opened},
};
use crate::{
    flow::WorkloadRef,
    identity::SpiffeId,
    metrics::RefusalReason,
    policy::{InboundMode, Snapshot},
    tls::{
        detect::{Detected, detect},
        mesh,
    },
    workload::EnrolledPod,
};
pub use revocation::OpenInbound;

/// A terminated mesh mTLS connection.
type MeshServerStream = tokio_rustls::server::TlsStream<BufferedTcp>;

/// Serves one connection accepted on `pod`'s inbound listener; a refusal is returned to the accept
/// loop, which records it. Tunnel streams are recorded one by one as they are refused.
pub async fn handle(
    proxy: &Proxy,
    pod: &Arc<EnrolledPod>,
    downstream: TcpStream,
    client: SocketAddr,
) -> Result<(), Refused> {
    let _ = downstream.set_nodelay(true);
    let Ok(destination) = downstream.local_addr() else {
        return Ok(());
    };
    debug!(pod = %pod.spec.key(), %client, dst = %destination, "inbound captured");
    let mut request = accept(proxy, pod, client, destination);
    // Until its client certificate is verified, a connection counts against its source's limit.
    let unauthenticated = match proxy.usage.unauthenticated(client.ip()) {
        Ok(slot) => slot,
        Err(refusal) => return Err(Refused::new(request.info(), refusal).reset(downstream)),
    };
    (request.arrival, request.sni) = match classify(proxy, &request, &downstream).await {
        Some(classified) => classified,
        None => return Ok(()),
    };
    if request.arrival != Arrival::MeshTls {
        let passthrough = match proxy.usage.passthrough() {
            Ok(slot) => slot,
            Err(refusal) => return Err(Refused::new(request.info(), refusal).reset(downstream)),
        };
        let served = serve_plain(proxy, request, downstream).await;
        drop((passthrough, unauthenticated));
        return served;
    }
    let (tls, principal) = match terminate(proxy, pod, downstream).await {
        Ok(terminated) => terminated,
        Err(refusal) => return Err(Refused::new(request.info(), refusal)),
    };
    request.principal = Some(principal);
    drop(unauthenticated);
    if tls.get_ref().1.alpn_protocol() == Some(mesh::POOLED_ALPN) {
        serve_tunnel(proxy, request, tls).await;
        return Ok(());
    }
    serve_mesh(proxy, request, tls).await
}

/// The request as accepted, before anything was read from the client.
fn accept(
    proxy: &Proxy,
    pod: &Arc<EnrolledPod>,
    client: SocketAddr,
    destination: SocketAddr,
) -> InboundRequest {
    let snapshot = proxy.config.current();
    let source_workload = snapshot.pod_by_ip(client.ip()).map(|p| WorkloadRef {
        namespace: p.namespace().to_owned(),
        name: p.name().to_owned(),
        pod: p.name().to_owned(),
    });
    InboundRequest {
        pod: pod.clone(),
        client,
        source_workload,
        destination,
        mode: port_mode(&snapshot, pod, destination.port()),
        arrival: Arrival::Uninspected,
        principal: None,
        sni: None,
    }
}

/// The PeerAuthentication mode of one of the pod's ports. A pod the configuration no longer knows
/// gets the strictest treatment: fail closed.
fn port_mode(snapshot: &Snapshot, pod: &EnrolledPod, port: u16) -> InboundMode {
    snapshot
        .inbound(&pod.key, port)
        .map_or(InboundMode::Strict, |i| i.mode)
}

/// How the connection arrived, with the SNI of a TLS ClientHello; `None` when the client went
/// away while it was being classified.
async fn classify(
    proxy: &Proxy,
    request: &InboundRequest,
    downstream: &TcpStream,
) -> Option<(Arrival, Option<String>)> {
    if request.mode == InboundMode::Disable {
        return Some((Arrival::Uninspected, None));
    }
    match detect(downstream, proxy.timeouts.detect).await {
        Ok(Detected::MeshTls { sni }) => Some((Arrival::MeshTls, sni)),
        Ok(Detected::OtherTls { sni }) => Some((Arrival::OtherTls, sni)),
        Ok(Detected::Plaintext) => Some((Arrival::Plaintext, None)),
        Ok(Detected::Empty) => Some((Arrival::Silent, None)),
        Err(e) => {
            debug!(client = %request.client, error = %e, "inbound closed during detection");
            None
        }
    }
}

/// Terminates mesh mTLS with the pod's identity (client certificate required, chaining to the
/// mesh root); the client's verified SPIFFE id.
async fn terminate(
    proxy: &Proxy,
    pod: &EnrolledPod,
    downstream: TcpStream,
) -> Result<(MeshServerStream, SpiffeId), Refusal> {
    let accepted = tokio::time::timeout(
        proxy.timeouts.handshake,
        mesh::accept(pod.identity.server_config(), buffered(downstream)),
    )
    .await;
    let failed = |kind, error: String| {
        proxy.telemetry.metrics.handshake_failed(kind);
        Refusal::new(RefusalReason::DownstreamHandshake, error)
    };
    match accepted {
        Ok(Ok(terminated)) => Ok(terminated),
        Ok(Err(e)) => Err(failed("downstream", e.to_string())),
        Err(_) => Err(failed("timeout", "handshake timed out".into())),
    }
}

/// Plaintext, the app's own TLS or an uninspected connection: admitted, then spliced to the app.
async fn serve_plain(
    proxy: &Proxy,
    request: InboundRequest,
    downstream: TcpStream,
) -> Result<(), Refused> {
    let app = match admitted_app(proxy, &request).await {
        Ok(app) => app,
        Err(refusal) => return Err(Refused::new(request.info(), refusal).reset(downstream)),
    };
    let admitted = proxy.open_inbound.watch(&request);
    let mut conn = proxy.telemetry.open(request.info());
    let down = conn.count(downstream);
    let forwarding = admitted.until_revoked(splice_bidirectional(&down, &app));
    let result = observe(&mut conn, proxy.timeouts.idle, forwarding).await;
    finish(&result, &app, Some(down.get_ref()));
    Ok(())
}

/// A dedicated mesh mTLS connection: admitted, then its decrypted bytes copied to the app.
async fn serve_mesh(
    proxy: &Proxy,
    request: InboundRequest,
    tls: MeshServerStream,
) -> Result<(), Refused> {
    let mut app = match admitted_app(proxy, &request).await {
        Ok(app) => app,
        Err(refusal) => {
            let tcp = tls.into_inner().0.into_inner();
            return Err(Refused::new(request.info(), refusal).reset(tcp));
        }
    };
    let admitted = proxy.open_inbound.watch(&request);
    let mut conn = proxy.telemetry.open(request.info());
    let mut down = conn.count(tls);
    let forwarding = admitted.until_revoked(forward(&mut down, &mut app));
    let result = observe(&mut conn, proxy.timeouts.idle, forwarding).await;
    finish(&result, &app, Some(down.get_ref().get_ref().0.get_ref()));
    Ok(())
}

/// A tunnel: every stream is its own request to a port of this pod, admitted on its own.
async fn serve_tunnel(proxy: &Proxy, tunnel: InboundRequest, tls: MeshServerStream) {
    let open = |port| {
        let mut stream = tunnel.clone();
        stream.destination = SocketAddr::new(tunnel.destination.ip(), port);
        stream.mode = port_mode(&proxy.config.current(), &stream.pod, port);
        stream.arrival = Arrival::TunnelStream;
        open_stream(proxy, stream)
    };
    tunnel_server::serve(tls, proxy.timeouts.idle, proxy.draining(), open).await;
}

async fn open_stream(proxy: &Proxy, request: InboundRequest) -> Result<Opened<'_>, String> {
    match admitted_app(proxy, &request).await {
        Ok(app) => {
            let admitted = proxy.open_inbound.watch(&request);
            Ok(Opened {
                app,
                observed: proxy.telemetry.open(request.info()),
                revoked: Box::pin(async move { admitted.revoked().await }),
            })
        }
        Err(refusal) => {
            let why = refusal.error.clone();
            refusal::record(&proxy.telemetry, Refused::new(request.info(), refusal));
            Err(why)
        }
    }
}

/// Admission, then the app's socket: nothing is connected to the app before admission says yes.
async fn admitted_app(proxy: &Proxy, request: &InboundRequest) -> Result<TcpStream, Refusal> {
    admit(&proxy.config.current(), &proxy.telemetry.metrics, request)?;
    let dst = request.destination;
    let app = connect_in(&request.pod.netns, dst, proxy.timeouts.connect)
        .await
        .map_err(|e| Refusal::new(RefusalReason::UpstreamConnect, format!("app {dst}: {e}")))?;
    // Armed now, so that a dead agent's close reaches the app as a reset (`finish` disarms it).
    reset(&app);
    Ok(app)
}
