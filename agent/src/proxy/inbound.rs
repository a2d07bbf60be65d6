//! Inbound: connections for a pod's addresses, handed to its inbound listener by sk_lookup. The
//! accepted socket's local address is the original destination.
use std::{net::SocketAddr, sync::Arc};

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::{Proxy, forward::forward, upstream::connect_in};
use crate::workload::EnrolledPod;

pub async fn serve(listener: TcpListener, pod: Arc<EnrolledPod>, proxy: Arc<Proxy>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let (pod, proxy) = (pod.clone(), proxy.clone());
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, peer, &pod, &proxy).await {
                        warn!(pod = %pod.spec.key(), client = %peer, error = %e, "inbound connection failed");
                    }
                });
            }
            Err(e) => warn!(pod = %pod.spec.key(), error = %e, "inbound accept failed"),
        }
    }
}

async fn handle(
    mut downstream: TcpStream,
    peer: SocketAddr,
    pod: &EnrolledPod,
    proxy: &Proxy,
) -> std::io::Result<()> {
    let _ = downstream.set_nodelay(true);
    let dst = downstream.local_addr()?;
    debug!(pod = %pod.spec.key(), client = %peer, dst = %dst, "inbound captured");
    // Connect to the app at the original destination from inside the pod: source and destination
    // are then both the pod's address, which sk_lookup lets through.
    let mut app = connect_in(&pod.netns, dst, proxy.connect_timeout).await?;
    let t = forward(&mut downstream, &mut app).await?;
    debug!(pod = %pod.spec.key(), client = %peer, dst = %dst, sent = t.to_downstream, received = t.to_upstream, "inbound closed");
    Ok(())
}
