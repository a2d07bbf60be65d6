//! Which policies apply to which pod, computed once per snapshot.
//!
//! Istio (`pilot/pkg/model/authorization.go` `ListAuthorizationPolicies`,
//! `policyattachment.go` `ShouldAttachPolicy`) looks a workload's policies up in the root
//! namespace and in the workload's own namespace, and keeps those whose selector is absent or
//! a label subset of the workload's labels. So a root-namespace policy without a selector applies
//! mesh-wide, and one *with* a selector applies to matching workloads in every namespace (the
//! opposite of PeerAuthentication, which ignores root-namespace selectors). An empty
//! `matchLabels` selects everything. A policy with `targetRef(s)` is never attached to a
//! workload. Dry-run policies are kept apart: evaluated, never enforced.
//!
//! Each list is in canonical order (namespace, name), so "the deciding policy" is the first
//! match in that order, close to Envoy's order of policy ids (`ns[NS]-policy[NAME]-rule[N]`).

use std::collections::HashMap;

use super::compile::{CompiledPolicy, TrustBundle, compile};
use crate::policy::model::{AuthorizationPolicy, AuthzPolicyAction, Pod};

/// Indices into [`AuthzIndex::policies`] that apply to one pod, by role.
#[derive(Debug, Clone, Default)]
pub(crate) struct Applicable {
    pub custom: Vec<u32>,
    pub deny: Vec<u32>,
    pub allow: Vec<u32>,
    pub audit: Vec<u32>,
    pub dry_run: Vec<u32>,
}

impl Applicable {
    fn push(&mut self, i: u32, p: &CompiledPolicy) {
        let list = match (p.dry_run, p.action) {
            (true, _) => &mut self.dry_run,
            (false, AuthzPolicyAction::Custom) => &mut self.custom,
            (false, AuthzPolicyAction::Deny) => &mut self.deny,
            (false, AuthzPolicyAction::Allow) => &mut self.allow,
            (false, AuthzPolicyAction::Audit) => &mut self.audit,
        };
        list.push(i);
    }

    /// Every index, for counting what a policy selects.
    pub(crate) fn all(&self) -> impl Iterator<Item = u32> + '_ {
        [
            &self.custom,
            &self.deny,
            &self.allow,
            &self.audit,
            &self.dry_run,
        ]
        .into_iter()
        .flatten()
        .copied()
    }
}

/// Compiled policies and, per snapshot pod index, the ones that apply.
#[derive(Debug, Default)]
pub(crate) struct AuthzIndex {
    pub policies: Vec<CompiledPolicy>,
    pub by_pod: Vec<Applicable>,
}

impl AuthzIndex {
    /// `policies` in canonical order; `pods` in snapshot order.
    pub(crate) fn build(
        policies: &[AuthorizationPolicy],
        pods: &[Pod],
        root_namespace: &str,
        bundle: &TrustBundle<'_>,
    ) -> Self {
        let compiled: Vec<CompiledPolicy> = policies.iter().map(|p| compile(p, bundle)).collect();
        let mut by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, p) in policies.iter().enumerate() {
            if !compiled[i].detached {
                by_namespace
                    .entry(p.metadata.namespace())
                    .or_default()
                    .push(i);
            }
        }
        let in_ns = |ns: &str| by_namespace.get(ns).into_iter().flatten().copied();
        let by_pod = pods
            .iter()
            .map(|pod| {
                let ns = pod.namespace();
                let own = (ns != root_namespace)
                    .then(|| in_ns(ns))
                    .into_iter()
                    .flatten();
                let mut ids: Vec<usize> = in_ns(root_namespace)
                    .chain(own)
                    .filter(|i| {
                        policies[*i]
                            .spec
                            .selector
                            .as_ref()
                            .is_none_or(|s| s.matches(pod.labels()))
                    })
                    .collect();
                ids.sort_unstable();
                let mut a = Applicable::default();
                for i in ids {
                    a.push(i as u32, &compiled[i]);
                }
                a
            })
            .collect();
        Self {
            policies: compiled,
            by_pod,
        }
    }
}
