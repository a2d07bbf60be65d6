//! Legacy `authentication.istio.io/v1alpha1` MeshPolicy and Policy (Istio ≤ 1.5), still found in
//! clusters being migrated and used by the seed article.
//!
//! Only the MeshPolicy named `default` counts; a Policy without targets is namespace-wide and counts
//! only when named `default`; a Policy with targets names Services (short names in its namespace),
//! optionally restricted to Service ports by number or name. Service beats namespace beats mesh, each
//! taken as a whole (no field-level inheritance).
//!
//! Istio never ran both APIs at once, so their combination is our choice: the narrower level wins,
//! and at the same level PeerAuthentication (the current API) wins.

use std::collections::BTreeSet;

use super::model::security::LegacyPolicySpec;
use super::model::{InboundMode, MeshPolicy, Pod, Policy, ResourceRef, Service};
use super::peer_authn::Level;

/// One legacy policy that applies to a pod, possibly only on some of its target ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyRule {
    pub level: Level,
    pub mode: InboundMode,
    pub resource: ResourceRef,
    /// Target (pod) ports the rule covers; `None` for all.
    pub ports: Option<BTreeSet<u16>>,
}

/// The legacy rules for `pod`, most specific first (service, namespace, mesh), oldest first within
/// the service level.
pub fn rules_for_pod(
    mesh_policies: &[MeshPolicy],
    policies: &[Policy],
    pod_services: &[&Service],
    pod: &Pod,
) -> Vec<LegacyRule> {
    let ns = pod.namespace();
    let mut service_level: Vec<(&Policy, LegacyRule)> = Vec::new();
    let mut namespace_level = None;
    for p in policies.iter().filter(|p| p.metadata.namespace() == ns) {
        if p.spec.targets.is_empty() {
            if p.metadata.name == "default" {
                namespace_level = Some(rule(
                    Level::Namespace,
                    "Policy",
                    Some(ns),
                    &p.metadata.name,
                    &p.spec,
                    None,
                ));
            }
            continue;
        }
        let mut ports: Option<BTreeSet<u16>> = Some(BTreeSet::new());
        let mut matched = false;
        for target in &p.spec.targets {
            for svc in pod_services.iter().filter(|s| s.name() == target.name) {
                matched = true;
                if target.ports.is_empty() {
                    ports = None;
                    continue;
                }
                for sel in &target.ports {
                    let hit = svc.spec.ports.iter().filter(|sp| {
                        sel.number == Some(sp.port) || (sel.name.is_some() && sel.name == sp.name)
                    });
                    for sp in hit {
                        if let (Some(set), Some(tp)) = (ports.as_mut(), sp.target_port_on(pod)) {
                            set.insert(tp);
                        }
                    }
                }
            }
        }
        if matched {
            service_level.push((
                p,
                rule(
                    Level::Workload,
                    "Policy",
                    Some(ns),
                    &p.metadata.name,
                    &p.spec,
                    ports,
                ),
            ));
        }
    }
    service_level.sort_by(|a, b| a.0.metadata.age_key().cmp(&b.0.metadata.age_key()));
    let mesh = mesh_policies
        .iter()
        .find(|m| m.metadata.name == "default")
        .map(|m| {
            rule(
                Level::Mesh,
                "MeshPolicy",
                None,
                &m.metadata.name,
                &m.spec,
                None,
            )
        });
    service_level
        .into_iter()
        .map(|(_, r)| r)
        .chain(namespace_level)
        .chain(mesh)
        .collect()
}

fn rule(
    level: Level,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    spec: &LegacyPolicySpec,
    ports: Option<BTreeSet<u16>>,
) -> LegacyRule {
    LegacyRule {
        level,
        mode: spec.mode(),
        resource: ResourceRef::new(kind, ns, name),
        ports,
    }
}

/// The first rule covering `port`.
pub fn for_port(rules: &[LegacyRule], port: u16) -> Option<&LegacyRule> {
    rules
        .iter()
        .find(|r| r.ports.as_ref().is_none_or(|p| p.contains(&port)))
}
