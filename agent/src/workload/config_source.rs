//! Pods of this node from the local `--config` directory (Pod YAML with the annotations
//! `sockmesh.io/cgroup` and `sockmesh.io/netns`), re-read when files change.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use tokio::sync::watch;
use tracing::warn;

use super::PodSpec;

#[derive(Deserialize)]
struct Doc {
    kind: Option<String>,
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: Spec,
    #[serde(default)]
    status: Status,
}

#[derive(Default, Deserialize)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    node_name: Option<String>,
    service_account_name: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pod_ips: Vec<PodIp>,
}

#[derive(Deserialize)]
struct PodIp {
    ip: String,
}

fn read(path: &Path, node: &str) -> anyhow::Result<Vec<PodSpec>> {
    let mut files = Vec::new();
    collect(path, &mut files)?;
    let mut pods = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        for doc in serde_norway::Deserializer::from_str(&text) {
            let Ok(d) = Doc::deserialize(doc) else {
                continue;
            };
            if d.kind.as_deref() != Some("Pod") || d.spec.node_name.as_deref() != Some(node) {
                continue;
            }
            let (Some(cg), Some(ns)) = (
                d.metadata.annotations.get("sockmesh.io/cgroup"),
                d.metadata.annotations.get("sockmesh.io/netns"),
            ) else {
                continue;
            };
            let mut ips: Vec<std::net::IpAddr> = d
                .status
                .pod_ips
                .iter()
                .filter_map(|p| p.ip.parse().ok())
                .collect();
            if ips.is_empty() {
                ips.extend(
                    d.status
                        .pod_ip
                        .as_deref()
                        .and_then(|p| p.parse::<std::net::IpAddr>().ok()),
                );
            }
            pods.push(PodSpec {
                namespace: d.metadata.namespace.unwrap_or_else(|| "default".into()),
                name: d.metadata.name,
                service_account: d
                    .spec
                    .service_account_name
                    .unwrap_or_else(|| "default".into()),
                ips,
                cgroups: cg
                    .split(',')
                    .flat_map(|s| crate::cgroup::with_descendants(Path::new(s.trim())))
                    .collect(),
                netns: PathBuf::from(ns),
            });
        }
    }
    Ok(pods)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            collect(&e, out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

pub fn watch_pods(path: &Path, node: &str) -> anyhow::Result<watch::Receiver<Vec<PodSpec>>> {
    let (tx, rx) = watch::channel(read(path, node)?);
    let (path, node) = (path.to_path_buf(), node.to_string());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match read(&path, &node) {
                Ok(p) => {
                    tx.send_if_modified(|cur| {
                        if *cur != p {
                            *cur = p;
                            true
                        } else {
                            false
                        }
                    });
                }
                Err(e) => warn!(error = %e, "config read failed"),
            }
        }
    });
    Ok(rx)
}
