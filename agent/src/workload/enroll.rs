//! Enrollment: turning a `PodSpec` into capture state (maps, listeners, sk_lookup link) and back.
//!
//! Order matters. Enrolling, the listeners, the sk_lookup link and the pod's addresses come first
//! and the cgroup ids last, so the first redirected connect already finds a listener. Removing,
//! the cgroup ids go first, so new connects go direct again before the listeners close.
use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use sockmesh_common::{Addr, Workload};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::{EnrolledPod, PodListeners, PodSpec, ServePod, WorkloadByCgroup};
use crate::{
    capture::{Capture, addr_key},
    cgroup,
    identity::{CertManager, SpiffeId},
    netns::Netns,
    policy::PodKey,
};

/// One enrolled pod and the accept loops serving it.
struct Enrollment {
    pod: Arc<EnrolledPod>,
    /// The spec as last reconciled (container cgroups change in place).
    spec: PodSpec,
    cgroup_ids: Vec<u64>,
    /// Pod-level cgroups (no ancestor among the pod's cgroups) carrying a sock_ops link.
    sock_ops_cgroups: Vec<u64>,
    addrs: Vec<Addr>,
    accept_loops: Vec<JoinHandle<()>>,
}

/// What enrollment works with: the capture maps, the registry the proxy reads, certificates,
/// and what serves a pod's listeners.
pub struct EnrollerParts {
    pub capture: Arc<Capture>,
    pub workloads: Arc<WorkloadByCgroup>,
    pub certs: Arc<CertManager>,
    pub server: Arc<dyn ServePod>,
    pub trust_domain: String,
    pub cgroup_mount: PathBuf,
    pub outbound_port: u16,
    pub inbound_port: u16,
}

/// Keeps the enrolled pods equal to the desired set.
pub struct Enroller {
    parts: EnrollerParts,
    enrolled: BTreeMap<String, Enrollment>,
    next_id: u32,
}

impl Enroller {
    pub fn new(parts: EnrollerParts) -> Self {
        Self {
            parts,
            enrolled: BTreeMap::new(),
            next_id: 1,
        }
    }

    fn capture(&self) -> &Capture {
        &self.parts.capture
    }

    fn workloads(&self) -> &WorkloadByCgroup {
        &self.parts.workloads
    }

    /// Enrolls new pods, re-enrolls changed ones, removes departed ones. A pod that fails to enroll
    /// is logged and skipped; it never affects the others.
    pub fn reconcile(&mut self, desired: &[PodSpec]) {
        let wanted: BTreeMap<String, &PodSpec> = desired.iter().map(|p| (p.key(), p)).collect();
        let departed: Vec<String> = self
            .enrolled
            .iter()
            .filter(|(k, e)| wanted.get(*k).is_none_or(|spec| !same_pod(spec, &e.spec)))
            .map(|(k, _)| k.clone())
            .collect();
        for key in departed {
            self.unenroll(&key);
        }
        for (key, spec) in &wanted {
            if self
                .enrolled
                .get(key)
                .is_some_and(|e| e.spec.cgroups != spec.cgroups)
            {
                self.update_cgroups(key, spec);
            }
        }
        for (key, spec) in wanted {
            if self.enrolled.contains_key(&key) {
                continue;
            }
            match self.enroll(spec) {
                Ok(e) => {
                    info!(pod = %key, cgroups = ?e.cgroup_ids, netns_cookie = e.pod.netns_cookie, "pod enrolled");
                    self.enrolled.insert(key, e);
                }
                Err(err) => error!(pod = %key, error = format!("{err:#}"), "pod not enrolled"),
            }
        }
    }

    /// Removes capture state that no enrolled pod owns: leftovers of an earlier agent whose pods
    /// are gone. Called after the first reconcile.
    pub fn sweep_stale(&self) {
        let cgroups: HashSet<u64> = self
            .enrolled
            .values()
            .flat_map(|e| e.cgroup_ids.iter().copied())
            .collect();
        for id in self.capture().workload_cgroups() {
            if !cgroups.contains(&id) {
                info!(cgroup_id = id, "removing stale workload entry");
                self.capture().remove_workload(id);
            }
        }
        let addrs: HashSet<Addr> = self
            .enrolled
            .values()
            .flat_map(|e| e.addrs.iter().copied())
            .collect();
        for addr in self.capture().pod_addrs() {
            if !addrs.contains(&addr) {
                self.capture().remove_pod_addr(&addr);
            }
        }
        let sock_ops: HashSet<u64> = self
            .enrolled
            .values()
            .flat_map(|e| e.sock_ops_cgroups.iter().copied())
            .collect();
        for id in self.capture().linked_pod_cgroups() {
            if !sock_ops.contains(&id) {
                info!(cgroup_id = id, "removing stale sock_ops link");
                self.capture().unlink_pod_cgroup(id);
            }
        }
        let namespaces: HashSet<u64> = self
            .enrolled
            .values()
            .map(|e| e.pod.netns.inode())
            .collect();
        for inode in self.capture().linked_netns() {
            if !namespaces.contains(&inode) {
                info!(netns_inode = inode, "removing stale sk_lookup link");
                self.capture().unlink_netns(inode);
            }
        }
    }

    /// Closes every pod's listeners (their queued connections move to a newer agent's listeners)
    /// and leaves the capture maps and pins in place for that agent. Open connections go on.
    pub fn stop_accepting(&mut self) {
        for e in self.enrolled.values_mut() {
            for task in e.accept_loops.drain(..) {
                task.abort();
            }
        }
    }

    /// Number of pods currently enrolled.
    pub fn enrolled(&self) -> usize {
        self.enrolled.len()
    }

    /// Unenrolls every pod (agent shutdown leaves pinned programs; uninstall removes them).
    pub fn unenroll_all(&mut self) {
        let keys: Vec<String> = self.enrolled.keys().cloned().collect();
        for key in keys {
            self.unenroll(&key);
        }
    }

    fn enroll(&mut self, spec: &PodSpec) -> anyhow::Result<Enrollment> {
        let netns = Netns::open(&spec.netns)?;
        let cgroup_ids = spec
            .cgroups
            .iter()
            .map(|p| cgroup_id(&self.parts.cgroup_mount, p))
            .collect::<anyhow::Result<Vec<u64>>>()?;
        anyhow::ensure!(!cgroup_ids.is_empty(), "pod has no container cgroup");
        // The certificate is issued now, not on the pod's first connection.
        let spiffe = SpiffeId::new(
            &self.parts.trust_domain,
            &spec.namespace,
            &spec.service_account,
        )?;
        let identity = self
            .parts
            .certs
            .acquire(&spiffe)
            .with_context(|| format!("certificate for {spiffe}"))?;
        let listeners =
            match PodListeners::bind(&netns, self.parts.outbound_port, self.parts.inbound_port) {
                Ok(l) => l,
                Err(e) => {
                    self.parts.certs.release(&spiffe);
                    return Err(e);
                }
            };
        let id = self.next_id;
        self.next_id += 1;
        let pod = Arc::new(EnrolledPod {
            id,
            spec: spec.clone(),
            key: PodKey::new(&spec.namespace, &spec.name),
            identity,
            netns,
            netns_cookie: listeners.netns_cookie,
        });

        let mut enrollment = Enrollment {
            pod: pod.clone(),
            spec: spec.clone(),
            cgroup_ids: Vec::new(),
            sock_ops_cgroups: Vec::new(),
            addrs: Vec::new(),
            accept_loops: Vec::new(),
        };
        if let Err(e) = self.install(&mut enrollment, listeners, &cgroup_ids) {
            self.remove(&enrollment);
            return Err(e);
        }
        Ok(enrollment)
    }

    fn install(
        &self,
        e: &mut Enrollment,
        listeners: PodListeners,
        cgroup_ids: &[u64],
    ) -> anyhow::Result<()> {
        let pod = e.pod.clone();
        self.capture()
            .link_netns(&pod.netns)
            .context("linking sk_lookup")?;
        for root in pod_roots(&pod.spec.cgroups) {
            let dir = cgroup::resolve(&self.parts.cgroup_mount, root)?;
            let id = cgroup::cgroup_id(&dir)?;
            self.capture()
                .link_pod_cgroup(&dir, id)
                .with_context(|| format!("attaching sock_ops to {}", dir.display()))?;
            e.sock_ops_cgroups.push(id);
        }
        for ip in &pod.spec.ips {
            let inbound = if ip.is_ipv4() {
                Some(&listeners.inbound_v4)
            } else {
                listeners.inbound_v6.as_ref()
            };
            let Some(inbound) = inbound else {
                warn!(pod = %pod.spec.key(), %ip, "no IPv6 listener: inbound IPv6 not captured");
                continue;
            };
            let addr = Addr { ip: addr_key(*ip) };
            self.capture().insert_pod_addr(addr, pod.id, inbound)?;
            e.addrs.push(addr);
        }
        e.accept_loops = self.parts.server.clone().serve(&pod, listeners);
        for &cgroup in cgroup_ids {
            self.workloads().insert(cgroup, pod.clone());
            e.cgroup_ids.push(cgroup);
            self.capture().insert_workload(
                cgroup,
                Workload {
                    pod_id: pod.id,
                    outbound_port: self.parts.outbound_port,
                    _pad: 0,
                },
            )?;
        }
        Ok(())
    }

    /// A container started or stopped: add or remove its cgroup in place, without touching the
    /// pod's listeners or open connections.
    fn update_cgroups(&mut self, key: &str, spec: &PodSpec) {
        let mount = self.parts.cgroup_mount.clone();
        let ids: Vec<u64> = spec
            .cgroups
            .iter()
            .filter_map(|p| cgroup_id(&mount, p).ok())
            .collect();
        let Some(e) = self.enrolled.get_mut(key) else {
            return;
        };
        let pod = e.pod.clone();
        let (capture, workloads) = (&self.parts.capture, &self.parts.workloads);
        for gone in e.cgroup_ids.iter().filter(|id| !ids.contains(id)) {
            capture.remove_workload(*gone);
            workloads.remove(*gone);
        }
        for &new in ids.iter().filter(|id| !e.cgroup_ids.contains(id)) {
            workloads.insert(new, pod.clone());
            let entry = Workload {
                pod_id: pod.id,
                outbound_port: self.parts.outbound_port,
                _pad: 0,
            };
            if let Err(err) = capture.insert_workload(new, entry) {
                error!(pod = %key, cgroup_id = new, error = format!("{err:#}"), "container cgroup not enrolled");
            }
        }
        info!(pod = %key, cgroups = ?ids, "pod cgroups updated");
        e.cgroup_ids = ids;
        e.spec = spec.clone();
    }

    fn unenroll(&mut self, key: &str) {
        if let Some(e) = self.enrolled.remove(key) {
            self.remove(&e);
            info!(pod = %key, "pod unenrolled");
        }
    }

    fn remove(&self, e: &Enrollment) {
        for &cgroup in &e.cgroup_ids {
            self.capture().remove_workload(cgroup);
            self.workloads().remove(cgroup);
        }
        for addr in &e.addrs {
            self.capture().remove_pod_addr(addr);
        }
        self.capture().unlink_netns(e.pod.netns.inode());
        for &id in &e.sock_ops_cgroups {
            self.capture().unlink_pod_cgroup(id);
        }
        for task in &e.accept_loops {
            task.abort();
        }
        self.parts.certs.release(e.pod.identity.id());
    }
}

/// The pod's top cgroups: those with no ancestor among its cgroups (the pod cgroup itself when the
/// source lists it). sock_ops attached there covers every container below, present or future.
fn pod_roots(cgroups: &[PathBuf]) -> impl Iterator<Item = &PathBuf> {
    cgroups.iter().filter(|c| {
        !cgroups
            .iter()
            .any(|other| other != *c && c.starts_with(other))
    })
}

/// Same pod apart from its container cgroups (which change in place).
fn same_pod(a: &PodSpec, b: &PodSpec) -> bool {
    PodSpec {
        cgroups: Vec::new(),
        ..a.clone()
    } == PodSpec {
        cgroups: Vec::new(),
        ..b.clone()
    }
}

fn cgroup_id(mount: &Path, path: &Path) -> anyhow::Result<u64> {
    cgroup::cgroup_id(&cgroup::resolve(mount, path)?)
}
