//! Outbound: a pod's connection redirected by connect4/6 to its outbound listener. The proxy
//! recovers the original destination and the source workload from the capture maps, asks the
//! resolver what the destination is and how to reach it, and applies the client TLS mode.
use std::{net::SocketAddr, sync::Arc};

use sockmesh_common::ConnKey;
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use super::{
    Proxy,
    accept::{accept_loop, refuse},
    client_tls::{Upstream, secure},
    forward::{forward, observe},
    pooled,
    route::Route,
    splice::splice_bidirectional,
    upstream::connect_in,
    workload_ref,
};
use crate::{
    capture::addr_key,
    flow::{ConnectionInfo, Destination, Direction, Source, WireMode, WorkloadRef},
    metrics::RefusalReason,
    policy::TlsMode,
    workload::EnrolledPod,
};

/// Accepts the pod's redirected connections until the task is aborted (pod unenrolled).
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
    let mut info = ConnectionInfo {
        direction: Direction::Outbound,
        mode: WireMode::Plaintext,
        source: Source {
            addr: peer,
            workload: Some(workload_ref(pod)),
            principal: Some(pod.identity.id().to_string()),
        },
        destination: Destination {
            original: None,
            endpoint: None,
            service: None,
            workload: None,
            principal: None,
        },
    };
    let key = ConnKey {
        netns_cookie: pod.netns_cookie,
        ip: addr_key(peer.ip()),
        port: peer.port(),
        _pad: [0; 6],
    };
    let Some(orig) = proxy.capture.original_dst(&key) else {
        let why = format!(
            "no original destination recorded for client {peer} in netns cookie {}",
            pod.netns_cookie
        );
        return refuse(proxy, &downstream, info, RefusalReason::NoOriginalDst, why);
    };
    info.destination.original = Some(orig.addr);
    debug!(pod = %pod.spec.key(), client = %peer, orig_dst = %orig.addr, cgroup_id = orig.cgroup_id, "outbound captured");
    match proxy.workloads.get(orig.cgroup_id) {
        None => {
            let why = format!("cgroup {} is not an enrolled workload", orig.cgroup_id);
            return refuse(
                proxy,
                &downstream,
                info,
                RefusalReason::UnknownWorkload,
                why,
            );
        }
        Some(owner) if owner.id != pod.id => {
            let why = format!(
                "cgroup {} belongs to {}, not to {}",
                orig.cgroup_id,
                owner.spec.key(),
                pod.spec.key()
            );
            return refuse(
                proxy,
                &downstream,
                info,
                RefusalReason::WorkloadMismatch,
                why,
            );
        }
        Some(_) => {}
    }

    let snapshot = proxy.config.current();
    let outbound = snapshot.outbound(Some(&pod.key), orig.addr);
    let route = proxy.balancer.route(outbound, orig.addr, &snapshot);
    drop(snapshot);
    let Some(route) = route else {
        let why = format!("{} has no endpoint with an address", orig.addr);
        return refuse(
            proxy,
            &downstream,
            info,
            RefusalReason::UpstreamConnect,
            why,
        );
    };
    describe(&mut info, &route);
    if route.client.mode == TlsMode::IstioMutual {
        return pooled::outbound::handle(downstream, &route, info, pod, proxy).await;
    }
    match dial(&route, pod, proxy).await {
        Ok(upstream) => relay(downstream, upstream, info, proxy).await,
        Err((reason, why)) => refuse(proxy, &downstream, info, reason, why),
    }
}

/// Connects to the route's endpoint from the pod's netns and applies the route's client TLS mode.
pub(super) async fn dial(
    route: &Route,
    pod: &EnrolledPod,
    proxy: &Proxy,
) -> Result<Upstream, (RefusalReason, String)> {
    let tcp = connect_in(&pod.netns, route.endpoint, proxy.timeouts.connect)
        .await
        .map_err(|e| {
            (
                RefusalReason::UpstreamConnect,
                format!("connect {}: {e}", route.endpoint),
            )
        })?;
    secure(
        tcp,
        route,
        &pod.identity,
        &proxy.origination,
        proxy.timeouts.handshake,
    )
    .await
    .map_err(|e| {
        proxy.telemetry.metrics.handshake_failed("upstream");
        (RefusalReason::UpstreamHandshake, e.to_string())
    })
}

/// Fills in where the connection goes, as far as the route tells.
fn describe(info: &mut ConnectionInfo, route: &Route) {
    info.destination.endpoint = Some(route.endpoint);
    info.destination.service = route.service.clone();
    info.destination.workload = route
        .endpoint_pod
        .as_ref()
        .map(|(namespace, name)| WorkloadRef {
            namespace: namespace.clone(),
            name: name.clone(),
            pod: name.clone(),
        });
    info.destination.principal = route.expected.first().map(ToString::to_string);
}

/// Forwards an app connection over its own upstream connection.
pub(super) async fn relay(
    downstream: TcpStream,
    upstream: Upstream,
    mut info: ConnectionInfo,
    proxy: &Proxy,
) {
    match upstream {
        Upstream::Plain(tcp) => {
            let mut conn = proxy.telemetry.open(info);
            let down = conn.count(downstream);
            observe(&mut conn, splice_bidirectional(&down, &tcp)).await;
        }
        Upstream::Mesh(mut tls, peer) => {
            info.mode = WireMode::MutualTls;
            info.destination.principal = Some(peer.to_string());
            let mut conn = proxy.telemetry.open(info);
            let mut down = conn.count(downstream);
            observe(&mut conn, forward(&mut down, &mut tls)).await;
        }
        Upstream::Originated(mut tls) => {
            info.mode = WireMode::OriginatedTls;
            let mut conn = proxy.telemetry.open(info);
            let mut down = conn.count(downstream);
            observe(&mut conn, forward(&mut down, &mut tls)).await;
        }
    }
}
