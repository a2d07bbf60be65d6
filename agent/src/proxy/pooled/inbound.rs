//! The server side of a pooled connection: streams, one after another, to ports of the pod the
//! connection reached. The target address is always that pod's (the `Open` frame names only a
//! port), so a pooled connection can never be used to reach anything else.
use std::{net::SocketAddr, time::Duration};

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::{
    frame::{self, Kind},
    relay::relay,
};
use crate::{
    flow::ConnectionInfo,
    metrics::RefusalReason,
    policy::InboundMode,
    proxy::{Proxy, forward::observe, upstream::connect_in},
    workload::EnrolledPod,
};

/// An idle pooled connection is closed after this long without a new stream; clients close theirs
/// sooner (see `pool::IDLE_TIMEOUT`).
const SERVER_IDLE: Duration = Duration::from_secs(60);

/// Serves streams until the client closes the connection, a stream fails, or the agent drains.
/// `info` describes the connection (mesh mTLS, the client's identity); each stream is recorded as
/// one connection to its own port.
pub async fn serve<C>(mut conn: C, info: ConnectionInfo, pod: &EnrolledPod, proxy: &Proxy)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Some(reached) = info.destination.original else {
        return;
    };
    let mut draining = proxy.draining();
    loop {
        if *draining.borrow() {
            return;
        }
        let open = tokio::select! {
            open = tokio::time::timeout(SERVER_IDLE, frame::read_open(&mut conn)) => open,
            _ = draining.changed() => return,
        };
        let port = match open {
            Ok(Ok(Some(port))) => port,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => {
                return debug!(src = %info.source.addr, error = %e, "pooled connection closed");
            }
        };
        let dst = SocketAddr::new(reached.ip(), port);
        let mut stream = info.clone();
        stream.destination.original = Some(dst);
        stream.destination.endpoint = Some(dst);
        if !serve_stream(&mut conn, stream, pod, proxy).await {
            return;
        }
    }
}

/// Serves one stream; false when the connection cannot carry another.
async fn serve_stream<C>(
    conn: &mut C,
    info: ConnectionInfo,
    pod: &EnrolledPod,
    proxy: &Proxy,
) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let dst = info.destination.original.expect("set by serve");
    // A pod the configuration no longer knows gets the strictest treatment, which mesh mTLS meets.
    let mode = proxy
        .config
        .current()
        .inbound(&pod.key, dst.port())
        .map_or(InboundMode::Strict, |i| i.mode);
    if mode == InboundMode::Disable {
        let why = format!(
            "port {} of {} has PeerAuthentication mode DISABLE and does not terminate mesh mTLS",
            dst.port(),
            pod.spec.key()
        );
        proxy
            .telemetry
            .refuse(info, RefusalReason::PolicyDenied, &why);
        return frame::write_refuse(conn, &why).await.is_ok();
    }
    let mut app = match connect_in(&pod.netns, dst, proxy.timeouts.connect).await {
        Ok(app) => app,
        Err(e) => {
            let why = format!("app {dst}: {e}");
            proxy
                .telemetry
                .refuse(info, RefusalReason::UpstreamConnect, &why);
            return frame::write_refuse(conn, &why).await.is_ok();
        }
    };
    if frame::write_empty(conn, Kind::Accept).await.is_err() {
        return false;
    }
    let mut observed = proxy.telemetry.open(info);
    let mut counted = observed.count_destination(&mut app);
    let mut clean = false;
    observe(&mut observed, async {
        let result = relay(conn, &mut counted).await;
        clean = result.is_ok();
        result
    })
    .await;
    clean
}
