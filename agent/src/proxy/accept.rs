//! The accept loop of a pod's listener: each accepted socket runs on its own task through the
//! direction's handler, and a refusal the handler returns is recorded here, once. A connection
//! over the limit is refused before a task is spawned; `accept` errors (out of fds or memory)
//! back off instead of spinning, and are logged at a bounded rate.
use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use super::{
    Proxy, inbound, outbound,
    refusal::{self, Refused},
};
use crate::{
    flow::{ConnectionInfo, Destination, Direction, Source, WireMode},
    log_throttle::Throttle,
    log_throttled,
    workload::EnrolledPod,
};

static ACCEPT_FAILED: Throttle = Throttle::new("accept failed", 5);
/// The first pause after a failed `accept`; doubled on each failure in a row.
const BACKOFF_START: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts the pod's connections until the task is aborted (pod unenrolled, agent draining); each
/// counts as in flight until it ends.
pub async fn accept_loop(
    listener: TcpListener,
    direction: Direction,
    pod: Arc<EnrolledPod>,
    proxy: Arc<Proxy>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = BACKOFF_START;
                let in_flight = match proxy.track() {
                    Ok(in_flight) => in_flight,
                    Err(refusal) => {
                        let info = unserved(direction, &pod, &stream, peer);
                        refusal::record(
                            &proxy.telemetry,
                            Refused::new(info, refusal).reset(stream),
                        );
                        continue;
                    }
                };
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
            Err(e) => {
                log_throttled!(
                    ACCEPT_FAILED,
                    warn!(pod = %pod.spec.key(), error = %e, retry_in = ?backoff, "accept failed")
                );
                if resource_exhausted(&e) {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// Errors that mean the process or the system is out of something: retrying at once would spin.
fn resource_exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// What is known of a connection refused before its handler ran.
fn unserved(
    direction: Direction,
    pod: &EnrolledPod,
    stream: &TcpStream,
    peer: SocketAddr,
) -> ConnectionInfo {
    let pod_ref = Some(pod.workload_ref());
    let (source, destination) = match direction {
        Direction::Outbound => (pod_ref, None),
        Direction::Inbound => (None, pod_ref),
    };
    ConnectionInfo {
        direction,
        mode: WireMode::Plaintext,
        source: Source {
            addr: peer,
            workload: source,
            principal: None,
        },
        destination: Destination {
            original: (direction == Direction::Inbound)
                .then(|| stream.local_addr().ok())
                .flatten(),
            endpoint: None,
            service: None,
            workload: destination,
            principal: None,
        },
    }
}
