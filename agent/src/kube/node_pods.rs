//! The desired pod set for the enroller, recomputed whenever the API state changes or a pod or
//! container cgroup appears, so a new container is enrolled without waiting for the API.
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::{
    api_state::ApiState,
    cgroup_watch::CgroupEvent,
    discovery::Layout,
    enrollment::{OwnPod, pod_specs},
};
use crate::workload::PodSpec;

/// Mesh membership of `(namespace, name)`, decided by the policy model.
pub type InMesh = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Feeds `run.rs`'s reconcile loop like the file source does. Stops when the receiver is dropped.
pub fn watch_node_pods(
    node: String,
    mut api: watch::Receiver<ApiState>,
    mut cgroups: mpsc::UnboundedReceiver<CgroupEvent>,
    layout: Layout,
    own: Option<OwnPod>,
    in_mesh: InMesh,
) -> watch::Receiver<Vec<PodSpec>> {
    let compute = move |state: &ApiState| {
        pod_specs(
            state.objects("Pod"),
            &node,
            |ns, n| in_mesh(ns, n),
            &layout,
            own.as_ref(),
        )
    };
    let (tx, rx) = watch::channel(compute(&api.borrow_and_update()));
    tokio::spawn(async move {
        let mut cgroups_open = true;
        loop {
            tokio::select! {
                changed = api.changed() => if changed.is_err() { return },
                event = cgroups.recv(), if cgroups_open => cgroups_open = event.is_some(),
                () = tx.closed() => return,
            }
            let pods = compute(&api.borrow_and_update());
            tx.send_if_modified(|cur| {
                let changed = *cur != pods;
                if changed {
                    *cur = pods;
                }
                changed
            });
        }
    });
    rx
}
