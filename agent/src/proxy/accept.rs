//! What inbound and outbound share around a connection: the accept loop of a pod's listener and
//! the refusal of a connection.
use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use super::{Proxy, forward::reset};
use crate::{flow::ConnectionInfo, metrics::RefusalReason, workload::EnrolledPod};

/// Accepts the pod's connections until the task is aborted (pod unenrolled, agent draining); each
/// runs on its own task and counts as in flight until it ends.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    pod: Arc<EnrolledPod>,
    proxy: Arc<Proxy>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, Arc<EnrolledPod>, Arc<Proxy>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let in_flight = proxy.track();
                let connection = handle(stream, peer, pod.clone(), proxy.clone());
                tokio::spawn(async move {
                    connection.await;
                    drop(in_flight);
                });
            }
            Err(e) => warn!(pod = %pod.spec.key(), error = %e, "accept failed"),
        }
    }
}

/// Refuses the connection: the client sees a reset; metrics and the access log say why.
pub fn refuse(
    proxy: &Proxy,
    downstream: &TcpStream,
    info: ConnectionInfo,
    reason: RefusalReason,
    error: impl std::fmt::Display,
) {
    warn!(
        direction = info.direction.as_str(),
        src = %info.source.addr,
        dst = ?info.destination.original,
        reason = reason.as_str(),
        %error,
        "connection refused"
    );
    reset(downstream);
    proxy.telemetry.refuse(info, reason, error);
}
