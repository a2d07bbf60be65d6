//! What the agent needs to know to enroll a pod, whatever source (config directory, Kubernetes)
//! it came from.
use std::{net::IpAddr, path::PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub ips: Vec<IpAddr>,
    /// Container cgroups, relative to the cgroup2 mount (or absolute under it).
    pub cgroups: Vec<PathBuf>,
    /// Path of the pod's network namespace (e.g. `/run/netns/<name>` or `/proc/<pid>/ns/net`).
    pub netns: PathBuf,
}

impl PodSpec {
    /// `namespace/name`, the key pods are known by in logs and the CLI.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}
