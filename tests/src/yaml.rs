//! Kubernetes manifests for the agent's `--config` directory. Strings are emitted as JSON strings,
//! which YAML reads as double-quoted scalars, so no value needs escaping rules of its own.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;

/// Annotation naming the pod cgroup, relative to the cgroup2 mount; container cgroups are its
/// children, named like `spec.containers[].name`.
pub const CGROUP_ANNOTATION: &str = "sockmesh.io/cgroup";
/// Annotation naming the pod's network namespace (a path under /run/netns).
pub const NETNS_ANNOTATION: &str = "sockmesh.io/netns";

/// What a Pod manifest is rendered from.
pub(crate) struct PodManifest<'a> {
    pub(crate) name: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) node: &'a str,
    pub(crate) service_account: &'a str,
    pub(crate) labels: &'a BTreeMap<String, String>,
    pub(crate) annotations: &'a BTreeMap<String, String>,
    pub(crate) cgroup: &'a str,
    pub(crate) netns: &'a Path,
    pub(crate) ips: &'a [IpAddr],
    pub(crate) containers: &'a [String],
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings always serialize")
}

fn map(out: &mut String, key: &str, entries: &BTreeMap<String, String>) {
    if entries.is_empty() {
        let _ = writeln!(out, "  {key}: {{}}");
        return;
    }
    let _ = writeln!(out, "  {key}:");
    for (k, v) in entries {
        let _ = writeln!(out, "    {}: {}", q(k), q(v));
    }
}

pub(crate) fn pod(m: &PodManifest<'_>) -> String {
    let mut annotations = m.annotations.clone();
    annotations.insert(CGROUP_ANNOTATION.to_owned(), m.cgroup.to_owned());
    annotations.insert(NETNS_ANNOTATION.to_owned(), m.netns.display().to_string());
    let mut out = String::from("apiVersion: v1\nkind: Pod\nmetadata:\n");
    let _ = writeln!(
        out,
        "  name: {}\n  namespace: {}",
        q(m.name),
        q(m.namespace)
    );
    map(&mut out, "labels", m.labels);
    map(&mut out, "annotations", &annotations);
    let _ = writeln!(
        out,
        "spec:\n  nodeName: {}\n  serviceAccountName: {}",
        q(m.node),
        q(m.service_account)
    );
    out.push_str("  containers:\n");
    for c in m.containers {
        let _ = writeln!(out, "  - name: {}\n    image: \"sockmesh/pod-tool\"", q(c));
    }
    out.push_str("status:\n  phase: Running\n");
    if let Some(first) = m.ips.first() {
        let _ = writeln!(out, "  podIP: {}", q(&first.to_string()));
    }
    out.push_str("  podIPs:\n");
    for ip in m.ips {
        let _ = writeln!(out, "  - ip: {}", q(&ip.to_string()));
    }
    out
}

pub(crate) fn namespace(name: &str, labels: &BTreeMap<String, String>) -> String {
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n");
    let _ = writeln!(out, "  name: {}", q(name));
    map(&mut out, "labels", labels);
    out
}

/// The objects of a multi-document manifest, as JSON.
pub(crate) fn documents(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v = serde_json::Value::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}
