//! Outbound: a pod's connection redirected by connect4/6 to its outbound listener, through four
//! stages, each a function from one value to the next:
//!
//! 1. capture (`capture.rs`): original destination from the capture maps, source workload checked
//!    by cgroup → [`request::Captured`];
//! 2. resolve (`resolve.rs`, balancing in `route.rs`): the policy's answer and the chosen
//!    endpoint → [`OutboundRequest`];
//! 3. secure: ISTIO_MUTUAL rides a tunnel stream when the peer proxy speaks it, anything else
//!    gets its own upstream (`client_tls.rs`) → [`Upstream`];
//! 4. forward: telemetry opened once from the request, bytes moved until both sides end.
mod capture;
mod client_tls;
mod credentials;
mod request;
mod resolve;
mod route;

use std::{net::SocketAddr, sync::Arc};

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use self::{client_tls::Secured, request::Accepted};
use super::{
    Proxy,
    io::{
        buffered::BufferedTcp,
        forward::{finish, forward as copy, observe, reset},
        splice::splice_bidirectional,
    },
    refusal::{Refusal, Refused},
    tunnel::{Carrier, MeshConnection, PoolKey, TunnelStream},
};
use crate::{flow::WireMode, policy::TlsMode, workload::EnrolledPod};

pub use credentials::Credentials;
pub use request::OutboundRequest;
pub use route::Balancer;

/// Serves one connection accepted on `source`'s outbound listener; a refusal is returned to the
/// accept loop, which records it.
pub async fn handle(
    proxy: &Proxy,
    source: &Arc<EnrolledPod>,
    downstream: TcpStream,
    client: SocketAddr,
) -> Result<(), Refused> {
    let _ = downstream.set_nodelay(true);
    // Armed now, so that a dead agent's close reaches the app as a reset (`finish` disarms it).
    reset(&downstream);
    let accepted = Accepted {
        source: source.clone(),
        client,
    };
    let request = match capture::recover(proxy, accepted).and_then(|c| resolve::resolve(proxy, c)) {
        Ok(request) => request,
        Err(refused) => return Err(refused.reset(downstream)),
    };
    let upstream = match connect(proxy, &request).await {
        Ok(upstream) => upstream,
        Err(refusal) => return Err(Refused::new(request.info(), refusal).reset(downstream)),
    };
    forward(proxy, &request, downstream, upstream).await;
    Ok(())
}

/// The upstream side of an outbound connection, secured.
enum Upstream<'a> {
    Dedicated(Secured),
    Tunnel(TunnelStream<'a>),
}

/// ISTIO_MUTUAL takes a stream on a tunnel to the destination pod's proxy (dialling a new mesh
/// connection when none is idle); other modes and peers that do not tunnel get a connection of
/// their own.
async fn connect<'a>(proxy: &'a Proxy, request: &OutboundRequest) -> Result<Upstream<'a>, Refusal> {
    let route = &request.route;
    if route.client.mode != TlsMode::IstioMutual {
        return client_tls::dial(proxy, request)
            .await
            .map(Upstream::Dedicated);
    }
    let key = PoolKey {
        pod: request.source.id,
        destination: route.endpoint.ip(),
        sni: route.client.sni.clone(),
        expected: route.expected.clone(),
    };
    let dial = || async {
        match client_tls::dial(proxy, request).await? {
            Secured::Mesh(mesh) => Ok(mesh),
            _ => unreachable!("ISTIO_MUTUAL is secured as mesh mTLS"),
        }
    };
    let carrier = proxy
        .tunnels
        .open(key, route.endpoint, proxy.timeouts.handshake, dial)
        .await?;
    Ok(match carrier {
        Carrier::Stream(stream) => Upstream::Tunnel(stream),
        Carrier::Dedicated(mesh) => Upstream::Dedicated(Secured::Mesh(mesh)),
    })
}

/// Moves the connection's bytes until both sides are done, observed as one connection. An
/// abnormal end on either side (a reset, a TLS stream cut without close_notify, a broken tunnel)
/// reaches the app as a reset, never as a clean end of stream.
async fn forward(
    proxy: &Proxy,
    request: &OutboundRequest,
    downstream: TcpStream,
    upstream: Upstream<'_>,
) {
    match upstream {
        Upstream::Dedicated(Secured::Plain(tcp)) => {
            let mut conn = proxy
                .telemetry
                .open(request.forwarded(WireMode::Plaintext, None));
            let down = conn.count(downstream);
            let forwarding = splice_bidirectional(&down, &tcp);
            let result = observe(&mut conn, proxy.timeouts.idle, forwarding).await;
            finish(&result, down.get_ref(), Some(&tcp));
        }
        Upstream::Dedicated(Secured::Mesh(MeshConnection { mut tls, peer })) => {
            let info = request.forwarded(WireMode::MutualTls, Some(&peer));
            copy_tls(proxy, info, downstream, &mut tls).await;
        }
        Upstream::Dedicated(Secured::Originated(mut tls)) => {
            let info = request.forwarded(WireMode::OriginatedTls, None);
            copy_tls(proxy, info, downstream, &mut tls).await;
        }
        Upstream::Tunnel(stream) => {
            let info = request.forwarded(WireMode::MutualTls, Some(stream.peer()));
            let mut conn = proxy.telemetry.open(info);
            let mut down = conn.count(downstream);
            let result = observe(&mut conn, proxy.timeouts.idle, stream.relay(&mut down)).await;
            finish(&result, down.get_ref(), None);
        }
    }
}

async fn copy_tls(
    proxy: &Proxy,
    info: crate::flow::ConnectionInfo,
    downstream: TcpStream,
    tls: &mut TlsStream<BufferedTcp>,
) {
    let mut conn = proxy.telemetry.open(info);
    let mut down = conn.count(downstream);
    let result = observe(&mut conn, proxy.timeouts.idle, copy(&mut down, tls)).await;
    finish(&result, down.get_ref(), Some(tls.get_ref().0.get_ref()));
}
