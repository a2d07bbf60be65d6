//! The proxy's view of enrolled pods: cgroup id -> pod, read on every accepted connection.
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use super::PodSpec;
use crate::{flow::WorkloadRef, identity::WorkloadIdentity, netns::Netns, policy::PodKey};

/// An enrolled pod as the proxy sees it.
pub struct EnrolledPod {
    pub id: u32,
    pub spec: PodSpec,
    /// The pod's key in the policy model.
    pub key: PodKey,
    /// The pod's SPIFFE identity and certificate (shared by pods with the same service account).
    pub identity: Arc<WorkloadIdentity>,
    pub netns: Netns,
    /// Cookie of the pod's network namespace: part of the `CONNS` key of its connections.
    pub netns_cookie: u64,
}

impl EnrolledPod {
    /// How metrics and logs name the pod.
    pub fn workload_ref(&self) -> WorkloadRef {
        WorkloadRef {
            namespace: self.spec.namespace.clone(),
            name: self.spec.name.clone(),
            pod: self.spec.name.clone(),
        }
    }
}

impl std::fmt::Debug for EnrolledPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolledPod")
            .field("id", &self.id)
            .field("pod", &self.spec.key())
            .field("identity", self.identity.id())
            .field("netns_cookie", &self.netns_cookie)
            .finish()
    }
}

/// cgroup id -> enrolled pod. Every container cgroup of a pod maps to the same pod.
#[derive(Default)]
pub struct WorkloadByCgroup {
    map: RwLock<HashMap<u64, Arc<EnrolledPod>>>,
}

impl WorkloadByCgroup {
    pub fn get(&self, cgroup_id: u64) -> Option<Arc<EnrolledPod>> {
        self.read().get(&cgroup_id).cloned()
    }

    pub fn insert(&self, cgroup_id: u64, pod: Arc<EnrolledPod>) {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(cgroup_id, pod);
    }

    pub fn remove(&self, cgroup_id: u64) {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&cgroup_id);
    }

    /// Distinct enrolled pods with their cgroup ids, for the admin API and CLI.
    pub fn pods(&self) -> Vec<(Arc<EnrolledPod>, Vec<u64>)> {
        let mut by_id: HashMap<u32, (Arc<EnrolledPod>, Vec<u64>)> = HashMap::new();
        for (cgroup, pod) in self.read().iter() {
            by_id
                .entry(pod.id)
                .or_insert_with(|| (pod.clone(), Vec::new()))
                .1
                .push(*cgroup);
        }
        let mut pods: Vec<_> = by_id.into_values().collect();
        pods.sort_by_key(|(p, _)| p.spec.key());
        pods
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Arc<EnrolledPod>>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
