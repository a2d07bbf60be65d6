//! This node's pods from the API, as the [`PodSpec`]s the enroller wants: cgroups and network
//! namespace come from [`discovery`](super::discovery), since the API does not know them.
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use super::{cgroup_layout::Qos, discovery::Layout};
use crate::workload::PodSpec;

/// The agent's own pod (`POD_NAMESPACE`/`POD_NAME` from the downward API): never captured, or
/// the agent would intercept its own API and proxy traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnPod {
    pub namespace: String,
    pub name: String,
}

/// The fields of a Pod object enrollment reads.
#[derive(Deserialize)]
struct PodFacts {
    metadata: Meta,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: String,
    uid: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    host_network: bool,
    service_account_name: Option<String>,
    node_name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    phase: Option<String>,
    qos_class: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pod_ips: Vec<PodIp>,
}

#[derive(Deserialize)]
struct PodIp {
    ip: String,
}

/// `PodSpec`s for the Pod objects scheduled on `node` (the API source lists every node's). Skipped:
/// pods `in_mesh(namespace, name)` rejects (mesh membership is the policy model's call),
/// hostNetwork pods (they share the node's namespace), the agent's own pod, finished pods, and
/// pods with no container cgroup or no process yet: the cgroup watch triggers a new pass then.
pub fn pod_specs<'a>(
    pods: impl IntoIterator<Item = &'a Value>,
    node: &str,
    in_mesh: impl Fn(&str, &str) -> bool,
    layout: &Layout,
    own: Option<&OwnPod>,
) -> Vec<PodSpec> {
    pods.into_iter()
        .filter_map(|v| PodFacts::deserialize(v).ok())
        .filter(|p| p.spec.node_name.as_deref() == Some(node))
        .filter(|p| !p.spec.host_network)
        .filter(|p| {
            matches!(
                p.status.phase.as_deref(),
                None | Some("Pending" | "Running")
            )
        })
        .filter(|p| {
            own.is_none_or(|o| {
                (&*o.namespace, &*o.name) != (&*p.metadata.namespace, &*p.metadata.name)
            })
        })
        .filter(|p| in_mesh(&p.metadata.namespace, &p.metadata.name))
        .filter_map(|p| spec(p, layout))
        .collect()
}

fn spec(p: PodFacts, layout: &Layout) -> Option<PodSpec> {
    let qos: Qos = p.status.qos_class.as_deref()?.parse().ok()?;
    let cgroups = layout.pod(p.metadata.uid.as_deref()?, qos)?;
    if cgroups.containers.is_empty() {
        return None;
    }
    let netns = cgroups.netns(&layout.mount)?;
    let mut ips: Vec<IpAddr> = p
        .status
        .pod_ips
        .iter()
        .filter_map(|i| i.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(p.status.pod_ip.and_then(|i| i.parse::<IpAddr>().ok()));
    }
    Some(PodSpec {
        namespace: p.metadata.namespace,
        name: p.metadata.name,
        service_account: p
            .spec
            .service_account_name
            .unwrap_or_else(|| "default".into()),
        ips,
        // The pod cgroup too: connect4/6 match a container cgroup the agent has not seen yet on
        // its enrolled pod cgroup, so a container that starts later is captured at once.
        cgroups: std::iter::once(cgroups.dir.clone())
            .chain(cgroups.containers.into_iter().map(|c| c.path))
            .collect(),
        netns,
    })
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        path::{Path, PathBuf},
    };

    use serde_json::json;

    use super::*;
    use crate::kube::cgroup_layout::Driver;

    struct Tree(PathBuf);

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn pod(name: &str, uid: &str, qos: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "app", "uid": uid},
               "spec": {"serviceAccountName": "sa", "nodeName": "n1"},
               "status": {"phase": "Running", "qosClass": qos,
                          "podIP": "10.0.0.7", "podIPs": [{"ip": "10.0.0.7"}, {"ip": "fd00::7"}]}})
    }

    fn uid(n: u8) -> String {
        format!("{n:08x}-0000-4000-8000-000000000000")
    }

    #[test]
    fn maps_mesh_pods_with_running_containers() {
        let tree =
            Tree(std::env::temp_dir().join(format!("sockmesh-enroll-{}", std::process::id())));
        let me = std::process::id();
        let mut pods = Vec::new();
        let names = [
            "web", "host", "agent", "outside", "starting", "done", "remote",
        ];
        for (n, name) in (1..).zip(names) {
            let dir = tree
                .0
                .join(Driver::Systemd.pod_dir(&uid(n), Qos::Burstable));
            let scope = dir.join(format!("cri-containerd-{}.scope", "a".repeat(64)));
            if name != "starting" {
                fs::create_dir_all(&scope).unwrap();
                fs::write(scope.join("cgroup.procs"), format!("{me}\n")).unwrap();
            } else {
                fs::create_dir_all(&dir).unwrap();
            }
            let mut p = pod(name, &uid(n), "Burstable");
            match name {
                "host" => p["spec"]["hostNetwork"] = json!(true),
                "agent" => p["metadata"]["namespace"] = json!("sockmesh-system"),
                "done" => p["status"]["phase"] = json!("Succeeded"),
                "remote" => p["spec"]["nodeName"] = json!("n2"),
                _ => {}
            }
            pods.push(p);
        }
        let layout = Layout::detect(&tree.0, Path::new("")).unwrap();
        let own = OwnPod {
            namespace: "sockmesh-system".into(),
            name: "agent".into(),
        };
        let specs = pod_specs(
            &pods,
            "n1",
            |_, name| name != "outside",
            &layout,
            Some(&own),
        );
        assert_eq!(specs.len(), 1, "{specs:?}");
        let web = &specs[0];
        assert_eq!(
            (web.key().as_str(), web.service_account.as_str()),
            ("app/web", "sa")
        );
        assert_eq!(
            web.ips,
            [
                "10.0.0.7".parse::<IpAddr>().unwrap(),
                "fd00::7".parse().unwrap()
            ]
        );
        assert_eq!(web.netns, PathBuf::from(format!("/proc/{me}/ns/net")));
        let pod_dir = Driver::Systemd.pod_dir(&uid(1), Qos::Burstable);
        let container = pod_dir.join(format!("cri-containerd-{}.scope", "a".repeat(64)));
        assert_eq!(web.cgroups, [pod_dir, container]);
    }
}
