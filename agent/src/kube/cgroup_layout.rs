//! How the kubelet names pod and container cgroups, per cgroup driver and container runtime.
//!
//! - `systemd` driver: `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/<scope>`
//!   with the UID's `-` written as `_` (systemd reserves `-` as the slice hierarchy separator), and
//!   Guaranteed pods directly under `kubepods.slice/kubepods-pod<uid>.slice`.
//! - `cgroupfs` driver: `kubepods/<qos>/pod<uid>/<container>`, Guaranteed pods under
//!   `kubepods/pod<uid>`.
//!
//! Container cgroups are `cri-containerd-<id>.scope` (containerd), `crio-<id>.scope` (CRI-O) or
//! `docker-<id>.scope` under systemd; a bare `<id>` (containerd, docker) or `crio-<id>` under
//! cgroupfs. CRI-O's monitor runs in `crio-conmon-<id>[.scope]`: not the workload, never enrolled.
use std::{fmt, path::PathBuf, str::FromStr};

/// The kubelet's `--cgroup-driver`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

impl Driver {
    /// Name of the top-level kubepods cgroup under the kubelet's cgroup root.
    pub fn kubepods_dir(self) -> &'static str {
        match self {
            Driver::Systemd => "kubepods.slice",
            Driver::Cgroupfs => "kubepods",
        }
    }

    /// The pod's cgroup, relative to the directory holding the kubepods cgroup.
    pub fn pod_dir(self, uid: &str, qos: Qos) -> PathBuf {
        let top = PathBuf::from(self.kubepods_dir());
        match (self, qos.slice_name()) {
            (Driver::Systemd, None) => top.join(format!("kubepods-pod{}.slice", systemd_uid(uid))),
            (Driver::Systemd, Some(q)) => top
                .join(format!("kubepods-{q}.slice"))
                .join(format!("kubepods-{q}-pod{}.slice", systemd_uid(uid))),
            (Driver::Cgroupfs, None) => top.join(format!("pod{uid}")),
            (Driver::Cgroupfs, Some(q)) => top.join(q).join(format!("pod{uid}")),
        }
    }
}

/// A pod's `status.qosClass`, which decides where the kubelet puts its cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    /// The QoS level's cgroup name; Guaranteed pods have none and sit directly under kubepods.
    fn slice_name(self) -> Option<&'static str> {
        match self {
            Qos::Guaranteed => None,
            Qos::Burstable => Some("burstable"),
            Qos::BestEffort => Some("besteffort"),
        }
    }
}

impl FromStr for Qos {
    type Err = UnknownQos;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Guaranteed" => Ok(Qos::Guaranteed),
            "Burstable" => Ok(Qos::Burstable),
            "BestEffort" => Ok(Qos::BestEffort),
            other => Err(UnknownQos(other.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown QoS class {0:?}")]
pub struct UnknownQos(String);

/// The container runtime, as told by the container cgroup's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
        })
    }
}

/// What a directory name under a pod cgroup says about the container in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerName {
    /// `None` for a bare cgroupfs id, which containerd and docker both use.
    pub runtime: Option<Runtime>,
    pub id: String,
}

/// Parses a container cgroup's directory name; `None` for conmon scopes and anything else.
pub fn parse_container(name: &str) -> Option<ContainerName> {
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let (runtime, rest) = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
    ]
    .into_iter()
    .find_map(|(prefix, rt)| name.strip_prefix(prefix).map(|r| (Some(rt), r)))
    .unwrap_or((None, name));
    let id = rest.strip_suffix(".scope").unwrap_or(rest);
    is_container_id(id).then(|| ContainerName {
        runtime,
        id: id.to_owned(),
    })
}

/// Parses a pod cgroup's directory name (either driver) into the pod UID as the API writes it.
pub fn parse_pod_uid(name: &str) -> Option<String> {
    let uid = if let Some(rest) = name.strip_suffix(".slice") {
        let (_, uid) = rest.rsplit_once("-pod")?;
        uid.replace('_', "-")
    } else {
        name.strip_prefix("pod")?.to_owned()
    };
    is_uid(&uid).then_some(uid)
}

fn systemd_uid(uid: &str) -> String {
    uid.replace('-', "_")
}

/// Runtimes use 64 hex digits; accept any long hex string so test fixtures can be short-ish.
fn is_container_id(id: &str) -> bool {
    id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uid(uid: &str) -> bool {
    uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0d3c8d2e-6a1f-4c55-9f5e-2b7e8a9c1d00";

    #[test]
    fn pod_dirs_for_both_drivers_and_all_qos_classes() {
        let cases = [
            (
                Driver::Systemd,
                Qos::Guaranteed,
                "kubepods.slice/kubepods-pod0d3c8d2e_6a1f_4c55_9f5e_2b7e8a9c1d00.slice",
            ),
            (
                Driver::Systemd,
                Qos::Burstable,
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0d3c8d2e_6a1f_4c55_9f5e_2b7e8a9c1d00.slice",
            ),
            (
                Driver::Systemd,
                Qos::BestEffort,
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0d3c8d2e_6a1f_4c55_9f5e_2b7e8a9c1d00.slice",
            ),
            (
                Driver::Cgroupfs,
                Qos::Guaranteed,
                "kubepods/pod0d3c8d2e-6a1f-4c55-9f5e-2b7e8a9c1d00",
            ),
            (
                Driver::Cgroupfs,
                Qos::Burstable,
                "kubepods/burstable/pod0d3c8d2e-6a1f-4c55-9f5e-2b7e8a9c1d00",
            ),
            (
                Driver::Cgroupfs,
                Qos::BestEffort,
                "kubepods/besteffort/pod0d3c8d2e-6a1f-4c55-9f5e-2b7e8a9c1d00",
            ),
        ];
        for (driver, qos, want) in cases {
            let dir = driver.pod_dir(UID, qos);
            assert_eq!(dir, PathBuf::from(want), "{driver:?} {qos:?}");
            let name = dir.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse_pod_uid(name).as_deref(), Some(UID));
        }
    }

    #[test]
    fn container_names_per_runtime() {
        let id = "a".repeat(64);
        let parse = |n: String| parse_container(&n);
        let named = |runtime| {
            Some(ContainerName {
                runtime,
                id: id.clone(),
            })
        };
        assert_eq!(
            parse(format!("cri-containerd-{id}.scope")),
            named(Some(Runtime::Containerd))
        );
        assert_eq!(
            parse(format!("crio-{id}.scope")),
            named(Some(Runtime::CriO))
        );
        assert_eq!(parse(format!("crio-{id}")), named(Some(Runtime::CriO)));
        assert_eq!(
            parse(format!("docker-{id}.scope")),
            named(Some(Runtime::Docker))
        );
        assert_eq!(parse(id.clone()), named(None));
        assert_eq!(parse(format!("crio-conmon-{id}.scope")), None);
        assert_eq!(parse(format!("crio-conmon-{id}")), None);
        assert_eq!(parse("cgroup.procs".into()), None);
        assert_eq!(parse("kubepods-burstable.slice".into()), None);
    }

    #[test]
    fn non_pod_names_have_no_uid() {
        assert_eq!(parse_pod_uid("kubepods-burstable.slice"), None);
        assert_eq!(parse_pod_uid("burstable"), None);
        assert_eq!(parse_pod_uid("podnotauid"), None);
    }

    #[test]
    fn qos_parses_api_spelling() {
        assert_eq!("BestEffort".parse::<Qos>().unwrap(), Qos::BestEffort);
        assert!("besteffort".parse::<Qos>().is_err());
    }
}
