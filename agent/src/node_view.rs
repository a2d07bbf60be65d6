//! What the admin API shows about this node: enrolled workloads, their certificates, and the
//! resolved configuration with the effective inbound mode per workload and port.
use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use serde_json::{Value, json};

use crate::{
    admin::{AdminSource, CertificateInfo, EnrollmentState, WorkloadStatus},
    identity::CertManager,
    policy::ConfigHandle,
    workload::WorkloadByCgroup,
};

pub struct NodeView {
    pub node: String,
    pub workloads: Arc<WorkloadByCgroup>,
    pub certs: Arc<CertManager>,
    pub config: ConfigHandle,
}

impl AdminSource for NodeView {
    fn config_dump(&self) -> Value {
        let snapshot = self.config.current();
        let pods: Vec<Value> = snapshot
            .all_pods_on_node(&self.node)
            .map(|(pod, in_mesh)| {
                let key = crate::policy::PodKey::new(pod.namespace(), pod.name());
                let mut ports: Vec<u16> = pod
                    .spec
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().map(|p| p.container_port))
                    .collect();
                ports.sort_unstable();
                ports.dedup();
                let modes: BTreeMap<String, Value> = ports
                    .iter()
                    .map(|port| (port.to_string(), json!(snapshot.inbound(&key, *port))))
                    .collect();
                json!({
                    "pod": format!("{}/{}", pod.namespace(), pod.name()),
                    "in_mesh": in_mesh,
                    "identity": pod.spiffe_id(&snapshot.settings.trust_domain),
                    "inbound": snapshot.inbound(&key, 0),
                    "inbound_by_port": modes,
                })
            })
            .collect();
        json!({
            "node": self.node,
            "settings": {
                "root_namespace": snapshot.settings.root_namespace,
                "trust_domain": snapshot.settings.trust_domain,
                "auto_mtls": snapshot.settings.auto_mtls,
                "cluster_domain": snapshot.settings.cluster_domain,
            },
            "last_error": self.config.last_error().map(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>()),
            "pods": pods,
            "resources": {
                "namespaces": snapshot.resources.namespaces.len(),
                "pods": snapshot.resources.pods.len(),
                "services": snapshot.resources.services.len(),
                "peer_authentications": snapshot.resources.peer_authentications.len(),
                "destination_rules": snapshot.resources.destination_rules.len(),
                "service_entries": snapshot.resources.service_entries.len(),
                "mesh_policies": snapshot.resources.mesh_policies.len(),
                "policies": snapshot.resources.policies.len(),
            },
        })
    }

    fn workloads(&self) -> Vec<WorkloadStatus> {
        self.workloads
            .pods()
            .into_iter()
            .map(|(pod, mut cgroup_ids)| {
                cgroup_ids.sort_unstable();
                WorkloadStatus {
                    namespace: pod.spec.namespace.clone(),
                    name: pod.spec.name.clone(),
                    service_account: pod.spec.service_account.clone(),
                    identity: Some(pod.identity.id().to_string()),
                    ips: pod.spec.ips.clone(),
                    cgroup_ids,
                    netns: pod.spec.netns.display().to_string(),
                    state: EnrollmentState::Enrolled,
                    detail: None,
                }
            })
            .collect()
    }

    fn certificates(&self) -> Vec<CertificateInfo> {
        let pods = self.workloads.pods();
        self.certs
            .cert_infos()
            .into_iter()
            .map(|c| {
                let workloads = pods
                    .iter()
                    .filter(|(p, _)| p.identity.id().to_string() == c.identity)
                    .map(|(p, _)| p.spec.key())
                    .collect();
                CertificateInfo {
                    serial: c.serial.replace(':', ""),
                    issuer: c.issuer,
                    not_before: rfc3339(&c.not_before),
                    not_after: rfc3339(&c.not_after),
                    sans: c.sans,
                    identity: c.identity,
                    workloads,
                }
            })
            .collect()
    }
}

fn rfc3339(s: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(s).unwrap_or(SystemTime::UNIX_EPOCH)
}
