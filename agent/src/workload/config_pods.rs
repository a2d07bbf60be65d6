//! This node's mesh pods as `PodSpec`s, from the policy configuration (the `--config` directory
//! today, the Kubernetes API source through the same `ConfigHandle`).
//!
//! Pods name their cgroup (`sockmesh.io/cgroup`, the pod-level cgroup, relative to the cgroup2
//! mount) and network namespace (`sockmesh.io/netns`). Every cgroup below the pod cgroup is one of
//! its containers; they are re-read on a short tick so a container that starts later is enrolled.
use std::{path::Path, path::PathBuf, time::Duration};

use tokio::sync::watch;
use tracing::warn;

use super::PodSpec;
use crate::{
    cgroup,
    policy::{ConfigHandle, Snapshot},
};

/// How often container cgroups are re-read between configuration changes.
const CGROUP_RESCAN: Duration = Duration::from_millis(250);

/// Publishes the node's pod set whenever the configuration or a pod's container cgroups change.
pub fn watch_pods(config: ConfigHandle, node: String) -> watch::Receiver<Vec<PodSpec>> {
    let (tx, rx) = watch::channel(pod_specs(&config.current(), &node));
    let mut changes = config.subscribe();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CGROUP_RESCAN);
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tick.tick() => {}
            }
            let pods = pod_specs(&config.current(), &node);
            tx.send_if_modified(|cur| {
                let changed = *cur != pods;
                if changed {
                    *cur = pods;
                }
                changed
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// Mesh pods of `node` that say where their cgroup and netns are.
pub fn pod_specs(snapshot: &Snapshot, node: &str) -> Vec<PodSpec> {
    snapshot
        .pods_on_node(node)
        .filter_map(|pod| {
            let key = format!("{}/{}", pod.namespace(), pod.name());
            let (cgroups, Some(netns)) = (pod.cgroup_paths(), pod.netns_path()) else {
                warn!(pod = %key, "mesh pod without sockmesh.io/netns annotation: not enrolled");
                return None;
            };
            if cgroups.is_empty() {
                warn!(pod = %key, "mesh pod without sockmesh.io/cgroup annotation: not enrolled");
                return None;
            }
            Some(PodSpec {
                namespace: pod.namespace().to_owned(),
                name: pod.name().to_owned(),
                service_account: pod.service_account().to_owned(),
                ips: pod.ips(),
                cgroups: cgroups
                    .iter()
                    .flat_map(|c| cgroup::with_descendants(Path::new(c)))
                    .collect(),
                netns: PathBuf::from(netns),
            })
        })
        .collect()
}
