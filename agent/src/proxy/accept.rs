//! The accept loop of a pod's listener: each accepted socket runs on its own task through the
//! direction's handler, and a refusal the handler returns is recorded here, once.
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::warn;

use super::{Proxy, inbound, outbound, refusal};
use crate::{flow::Direction, workload::EnrolledPod};

/// Accepts the pod's connections until the task is aborted (pod unenrolled, agent draining); each
/// counts as in flight until it ends.
pub async fn accept_loop(
    listener: TcpListener,
    direction: Direction,
    pod: Arc<EnrolledPod>,
    proxy: Arc<Proxy>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let in_flight = proxy.track();
                let (pod, proxy) = (pod.clone(), proxy.clone());
                tokio::spawn(async move {
                    let handled = match direction {
                        Direction::Outbound => outbound::handle(&proxy, &pod, stream, peer).await,
                        Direction::Inbound => inbound::handle(&proxy, &pod, stream, peer).await,
                    };
                    if let Err(refused) = handled {
                        refusal::record(&proxy.telemetry, refused);
                    }
                    drop(in_flight);
                });
            }
            Err(e) => warn!(pod = %pod.spec.key(), error = %e, "accept failed"),
        }
    }
}
