//! Inbound mode from PeerAuthentication, composed the way current Istio does
//! (`pilot/pkg/security/authn`: `ComposePeerAuthentication`).
//!
//! Levels: mesh (root namespace, no or empty selector), namespace (no selector), workload (selector,
//! same namespace). A selector in the root namespace is ignored, also for workloads that live in the
//! root namespace (Istio skips any root-namespace policy with a selector). At each level the oldest
//! policy wins, ties by name. UNSET inherits from the parent level; nothing configured is PERMISSIVE.
//! `portLevelMtls` is keyed by the workload port and honoured only on a workload (selector) policy;
//! an UNSET port inherits the workload's resolved mode.

use std::collections::{BTreeMap, HashMap};

use super::model::{InboundMode, PeerAuthentication, Pod, ResourceRef};

/// Policy scope, narrowest last so that `Ord` means "more specific".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Mesh,
    Namespace,
    Workload,
}

/// A decided mode and the resource that set it (`None`: the PERMISSIVE default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub mode: InboundMode,
    pub source: Option<(Level, ResourceRef)>,
    /// The `portLevelMtls` key that decided, when one did.
    pub port: Option<u16>,
}

/// Everything PeerAuthentication says about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    pub workload: Decided,
    pub per_port: BTreeMap<u16, Decided>,
}

impl PeerPolicy {
    pub fn for_port(&self, port: u16) -> &Decided {
        self.per_port.get(&port).unwrap_or(&self.workload)
    }
}

/// PeerAuthentications grouped by namespace, each group oldest first.
#[derive(Debug, Default)]
pub struct PeerAuthnIndex {
    by_namespace: HashMap<String, Vec<usize>>,
}

impl PeerAuthnIndex {
    pub fn build(policies: &[PeerAuthentication]) -> Self {
        let mut by_namespace: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, pa) in policies.iter().enumerate() {
            by_namespace
                .entry(pa.metadata.namespace().to_owned())
                .or_default()
                .push(i);
        }
        for group in by_namespace.values_mut() {
            group.sort_by(|a, b| {
                policies[*a]
                    .metadata
                    .age_key()
                    .cmp(&policies[*b].metadata.age_key())
            });
        }
        Self { by_namespace }
    }

    /// Policies of `namespace`, oldest first.
    pub fn in_namespace<'a>(
        &'a self,
        policies: &'a [PeerAuthentication],
        namespace: &str,
    ) -> impl Iterator<Item = &'a PeerAuthentication> + 'a {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .map(move |i| &policies[*i])
    }

    /// Composes the effective policy of `pod`.
    pub fn compose(
        &self,
        policies: &[PeerAuthentication],
        root_namespace: &str,
        pod: &Pod,
    ) -> PeerPolicy {
        let ns = pod.namespace();
        let mesh = self
            .in_namespace(policies, root_namespace)
            .find(|p| !p.spec.has_selector());
        let (namespace, workload) = if ns == root_namespace {
            (None, None)
        } else {
            let namespace = self
                .in_namespace(policies, ns)
                .find(|p| !p.spec.has_selector());
            let workload = self.in_namespace(policies, ns).find(|p| {
                p.spec
                    .selector
                    .as_ref()
                    .is_some_and(|s| !s.is_empty() && s.matches(pod.labels()))
            });
            (namespace, workload)
        };

        let mut decided = Decided {
            mode: InboundMode::Permissive,
            source: None,
            port: None,
        };
        for (level, pa) in [
            (Level::Mesh, mesh),
            (Level::Namespace, namespace),
            (Level::Workload, workload),
        ] {
            if let Some(pa) = pa
                && let Some(mode) = pa.spec.mode().effective()
            {
                decided = Decided {
                    mode,
                    source: Some((level, resource(pa))),
                    port: None,
                };
            }
        }
        let per_port = workload
            .map(|pa| {
                pa.spec
                    .port_level_mtls
                    .iter()
                    .map(|(port, mtls)| {
                        let d = match mtls.mode.effective() {
                            Some(mode) => Decided {
                                mode,
                                source: Some((Level::Workload, resource(pa))),
                                port: Some(*port),
                            },
                            None => decided.clone(),
                        };
                        (*port, d)
                    })
                    .collect()
            })
            .unwrap_or_default();
        PeerPolicy {
            workload: decided,
            per_port,
        }
    }
}

fn resource(pa: &PeerAuthentication) -> ResourceRef {
    ResourceRef::new(
        "PeerAuthentication",
        Some(pa.metadata.namespace()),
        &pa.metadata.name,
    )
}

#[cfg(test)]
mod tests;
