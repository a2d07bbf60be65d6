//! Kubernetes core kinds: Namespace, Pod, Service, Secret.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use super::meta::ObjectMeta;

/// Namespace label that enrols a namespace (or, with `disabled`, opts a pod out).
pub const CAPTURE_LABEL: &str = "sockmesh.io/capture";
/// Istio's injection label, honoured so that existing Istio namespaces migrate unchanged.
pub const ISTIO_INJECTION_LABEL: &str = "istio-injection";
/// Istio's per-pod opt-out, as a label or an annotation.
pub const ISTIO_INJECT_POD_KEY: &str = "sidecar.istio.io/inject";
/// Annotation with the pod's cgroup path(s), comma-separated when it has several containers.
pub const CGROUP_ANNOTATION: &str = "sockmesh.io/cgroup";
/// Annotation with the pod's network namespace path.
pub const NETNS_ANNOTATION: &str = "sockmesh.io/netns";

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Namespace {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

impl Namespace {
    /// Whether pods in this namespace are captured by default.
    pub fn mesh_enabled(&self) -> bool {
        let labels = &self.metadata.labels;
        labels.get(CAPTURE_LABEL).is_some_and(|v| v == "enabled")
            || labels
                .get(ISTIO_INJECTION_LABEL)
                .is_some_and(|v| v == "enabled")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub service_account_name: Option<String>,
    /// Deprecated alias Kubernetes still prints next to `serviceAccountName`.
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    pub container_port: u16,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PodIp {
    pub ip: String,
}

impl Pod {
    pub fn namespace(&self) -> &str {
        self.metadata.namespace()
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn uid(&self) -> Option<&str> {
        self.metadata.uid.as_deref()
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.metadata.labels
    }

    pub fn annotations(&self) -> &BTreeMap<String, String> {
        &self.metadata.annotations
    }

    /// Kubernetes' default service account is `default`.
    pub fn service_account(&self) -> &str {
        self.spec
            .service_account_name
            .as_deref()
            .or(self.spec.service_account.as_deref())
            .unwrap_or("default")
    }

    pub fn node_name(&self) -> Option<&str> {
        self.spec.node_name.as_deref()
    }

    /// `status.podIPs`, falling back to `status.podIP`; unparsable entries are dropped (the loader warns).
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .status
            .pod_ips
            .iter()
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        if let Some(ip) = self.status.pod_ip.as_deref().and_then(|s| s.parse().ok())
            && !ips.contains(&ip)
        {
            ips.insert(0, ip);
        }
        ips
    }

    /// The workload identity Istio issues: `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace(),
            self.service_account()
        )
    }

    /// Pod-level opt-out, by our label or Istio's label/annotation.
    pub fn opted_out(&self) -> bool {
        self.labels()
            .get(CAPTURE_LABEL)
            .is_some_and(|v| v == "disabled")
            || self
                .labels()
                .get(ISTIO_INJECT_POD_KEY)
                .is_some_and(|v| v == "false")
            || self
                .annotations()
                .get(ISTIO_INJECT_POD_KEY)
                .is_some_and(|v| v == "false")
    }

    /// Cgroup paths from `sockmesh.io/cgroup` for the capture code.
    pub fn cgroup_paths(&self) -> Vec<&str> {
        self.annotations()
            .get(CGROUP_ANNOTATION)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Network namespace path from `sockmesh.io/netns`.
    pub fn netns_path(&self) -> Option<&str> {
        self.annotations().get(NETNS_ANNOTATION).map(String::as_str)
    }

    /// Resolves a Service `targetPort` name against the pod's container ports.
    pub fn named_port(&self, name: &str) -> Option<u16> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    /// `None` means the service has no selector (manually managed endpoints, which we do not read).
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub target_port: Option<IntOrString>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub app_protocol: Option<String>,
}

/// `targetPort`: a number or a container port name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(u16),
    String(String),
}

impl ServicePort {
    /// The application already speaks TLS on this port: protocol or appProtocol HTTPS/TLS, or a name
    /// `https`/`tls` optionally followed by `-suffix` (Istio's explicit protocol selection).
    pub fn app_tls(&self) -> bool {
        app_tls(
            self.name.as_deref(),
            self.protocol
                .as_deref()
                .into_iter()
                .chain(self.app_protocol.as_deref()),
        )
    }

    /// The pod port this service port forwards to on `pod` (`None` when a named port is missing).
    pub fn target_port_on(&self, pod: &Pod) -> Option<u16> {
        match &self.target_port {
            None => Some(self.port),
            Some(IntOrString::Int(p)) => Some(*p),
            Some(IntOrString::String(s)) => s.parse().ok().or_else(|| pod.named_port(s)),
        }
    }
}

/// Shared by Service and ServiceEntry ports.
pub fn app_tls<'a>(name: Option<&str>, protocols: impl IntoIterator<Item = &'a str>) -> bool {
    let tls_word = |s: &str| {
        let s = s.to_ascii_lowercase();
        s == "https" || s == "tls"
    };
    protocols.into_iter().any(tls_word)
        || name.is_some_and(|n| {
            let lower = n.to_ascii_lowercase();
            let prefix = lower.split('-').next().unwrap_or("");
            prefix == "https" || prefix == "tls"
        })
}

impl Service {
    pub fn namespace(&self) -> &str {
        self.metadata.namespace()
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// `clusterIPs` plus `clusterIP`, without `None` (headless) and unparsable values.
    pub fn cluster_ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .spec
            .cluster_ips
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        if let Some(ip) = self.spec.cluster_ip.as_deref().and_then(|s| s.parse().ok())
            && !ips.contains(&ip)
        {
            ips.insert(0, ip);
        }
        ips
    }

    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.spec.ports.iter().find(|p| p.port == port)
    }

    /// Whether this service's selector picks `pod` (same namespace, non-empty selector).
    pub fn selects(&self, pod: &Pod) -> bool {
        match &self.spec.selector {
            Some(sel) if !sel.is_empty() => {
                pod.namespace() == self.namespace() && super::meta::subset_of(sel, pod.labels())
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Base64 values as `kubectl get -o yaml` prints them.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Plain values, accepted because hand-written files use them.
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
}

impl Secret {
    /// Decoded value of `key` (`stringData` wins, as the API server merges it last).
    pub fn value(&self, key: &str) -> Result<Option<Vec<u8>>, base64::DecodeError> {
        use base64::Engine;
        if let Some(v) = self.string_data.get(key) {
            return Ok(Some(v.clone().into_bytes()));
        }
        let Some(v) = self.data.get(key) else {
            return Ok(None);
        };
        let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_tls_by_protocol_or_name() {
        let cases = [
            (Some("https"), None, true),
            (Some("https-web"), None, true),
            (Some("tls"), None, true),
            (Some("http"), None, false),
            (Some("httpsx"), None, false),
            (Some("web"), Some("TLS"), true),
            (Some("web"), Some("HTTPS"), true),
            (None, Some("TCP"), false),
        ];
        for (name, proto, want) in cases {
            assert_eq!(app_tls(name, proto), want, "{name:?} {proto:?}");
        }
    }

    #[test]
    fn pod_ips_and_identity() {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("test1".into());
        pod.status.pod_ip = Some("10.0.0.1".into());
        pod.status.pod_ips = vec![
            PodIp {
                ip: "10.0.0.1".into(),
            },
            PodIp {
                ip: "fd00::1".into(),
            },
        ];
        assert_eq!(pod.ips().len(), 2);
        assert_eq!(
            pod.spiffe_id("cluster.local"),
            "spiffe://cluster.local/ns/test1/sa/default"
        );
    }

    #[test]
    fn secret_decodes_base64() {
        let mut s = Secret::default();
        s.data.insert("tls.crt".into(), "aGVs\nbG8=".into());
        assert_eq!(s.value("tls.crt").unwrap().unwrap(), b"hello");
        assert!(s.value("ca.crt").unwrap().is_none());
    }
}
