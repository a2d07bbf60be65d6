//! The client side: an app's mesh mTLS connection becomes a stream on a pooled connection to the
//! destination pod's proxy, made on first use and reused afterwards. A server that does not speak
//! the pooled protocol (an Istio sidecar, an older agent) keeps the connection to itself, as before.
use std::io;

use tokio::net::TcpStream;
use tracing::debug;

use super::{
    MeshStream,
    frame::{self, Answer},
    pool::PoolKey,
    relay::relay,
};
use crate::{
    flow::{ConnectionInfo, WireMode},
    metrics::RefusalReason,
    proxy::{
        Proxy,
        accept::refuse,
        client_tls::Upstream,
        forward::observe,
        outbound::{dial, relay as relay_dedicated},
        route::Route,
    },
    tls::mesh::POOLED_ALPN,
    workload::EnrolledPod,
};

/// A mesh connection ready to carry a stream, with the server identity verified when it was made.
pub struct Pooled {
    pub tls: MeshStream,
    pub peer: crate::identity::SpiffeId,
}

impl tokio::io::AsyncRead for Pooled {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

/// Carries the app's connection to `route` (ISTIO_MUTUAL) on a pooled connection.
pub async fn handle(
    downstream: TcpStream,
    route: &Route,
    mut info: ConnectionInfo,
    pod: &EnrolledPod,
    proxy: &Proxy,
) {
    let key = PoolKey {
        pod: pod.id,
        destination: route.endpoint.ip(),
        sni: route.client.sni.clone(),
        expected: route.expected.clone(),
    };
    let mut conn = loop {
        let (mut conn, reused) = match proxy.pool.take(&key) {
            Some(conn) => (conn, true),
            None => match dial(route, pod, proxy).await {
                Ok(Upstream::Mesh(tls, peer)) if negotiated_pooling(&tls) => {
                    (Pooled { tls: *tls, peer }, false)
                }
                Ok(upstream) => return relay_dedicated(downstream, upstream, info, proxy).await,
                Err((reason, why)) => return refuse(proxy, &downstream, info, reason, why),
            },
        };
        match open(&mut conn.tls, route.endpoint.port(), proxy).await {
            Ok(Answer::Accepted) => break conn,
            Ok(Answer::Refused(why)) => {
                proxy.pool.put(key, conn);
                let why = format!("the destination's proxy refused the stream: {why}");
                return refuse(
                    proxy,
                    &downstream,
                    info,
                    RefusalReason::UpstreamConnect,
                    why,
                );
            }
            // The server closed the idle connection as it was taken (idle timeout, restart): no
            // byte of the app was sent, so another connection can carry the stream.
            Err(e) if reused => {
                debug!(endpoint = %route.endpoint, error = %e, "pooled connection gone; trying another")
            }
            Err(e) => {
                let why = format!("opening a stream to {}: {e}", route.endpoint);
                return refuse(
                    proxy,
                    &downstream,
                    info,
                    RefusalReason::UpstreamConnect,
                    why,
                );
            }
        }
    };
    info.mode = WireMode::MutualTls;
    info.destination.principal = Some(conn.peer.to_string());
    let mut observed = proxy.telemetry.open(info);
    let mut down = observed.count(downstream);
    let mut clean = false;
    observe(&mut observed, async {
        let result = relay(&mut conn.tls, &mut down).await;
        clean = result.is_ok();
        result
    })
    .await;
    if clean {
        proxy.pool.put(key, conn);
    }
}

fn negotiated_pooling(tls: &MeshStream) -> bool {
    tls.get_ref().1.alpn_protocol() == Some(POOLED_ALPN)
}

/// Sends `Open` and waits for the answer, within the handshake timeout.
async fn open(tls: &mut MeshStream, port: u16, proxy: &Proxy) -> io::Result<Answer> {
    let exchange = async {
        frame::write_open(tls, port).await?;
        frame::read_answer(tls).await
    };
    tokio::time::timeout(proxy.timeouts.handshake, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer to Open"))?
}
