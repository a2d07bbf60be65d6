//! `sockmesh check` findings about AuthorizationPolicies.
//!
//! Per policy (found while compiling): CUSTOM (fails closed), HTTP-only fields, unknown `when`
//! keys, invalid values, principals in a foreign trust domain, `targetRef`. Across the
//! configuration: policies that apply to no pod, and workloads that their ALLOW policies leave
//! reachable from no in-mesh pod of the configuration (each caller with its SPIFFE id and IP, on
//! every port the workload declares: container ports and Service target ports; a workload
//! without declared ports is not judged).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::AuthzAction;
use super::AuthzRequest;
use crate::policy::diagnostic::{Code, Diagnostic, Severity};
use crate::policy::model::{PodKey, ResourceRef};
use crate::policy::snapshot::Snapshot;

pub(crate) fn findings(snap: &Snapshot, out: &mut Vec<Diagnostic>) {
    let index = &snap.authz;
    out.extend(
        index
            .policies
            .iter()
            .flat_map(|p| p.findings.iter().cloned()),
    );
    selects_nothing(snap, out);
    unreachable(snap, out);
}

fn selects_nothing(snap: &Snapshot, out: &mut Vec<Diagnostic>) {
    let index = &snap.authz;
    let mut used = vec![false; index.policies.len()];
    for i in index.by_pod.iter().flat_map(|a| a.all()) {
        used[i as usize] = true;
    }
    let r = &snap.resources;
    for (i, p) in r.authorization_policies.iter().enumerate() {
        if used[i] || index.policies[i].detached {
            continue;
        }
        let ns = p.metadata.namespace();
        out.push(Diagnostic::about(
            Severity::Warning,
            Code::AuthzSelectsNothing,
            ResourceRef::new("AuthorizationPolicy", Some(ns), &p.metadata.name),
            "applies to no pod in the configuration",
        ));
    }
}

/// A pod's enforced CUSTOM, DENY and ALLOW policy lists: equal lists, equal decisions.
type Enforced<'a> = (&'a [u32], &'a [u32], &'a [u32]);

/// A mesh pod as a caller.
struct Caller {
    key: PodKey,
    identity: String,
    ip: IpAddr,
}

fn unreachable(snap: &Snapshot, out: &mut Vec<Diagnostic>) {
    let r = &snap.resources;
    let callers: Vec<Caller> = r
        .pods
        .iter()
        .filter_map(|p| {
            let key = PodKey::new(p.namespace(), p.name());
            let ip = *p.ips().first()?;
            snap.in_mesh(&key).then(|| Caller {
                identity: p.spiffe_id(&snap.settings.trust_domain),
                key,
                ip,
            })
        })
        .collect();
    // Pods with the same enforced policies get the same answer: judge one of each group.
    let mut groups: HashMap<Enforced<'_>, Vec<usize>> = HashMap::new();
    for (i, a) in snap.authz.by_pod.iter().enumerate() {
        if !a.allow.is_empty() && snap.pod_in_mesh[i] {
            groups
                .entry((&a.custom, &a.deny, &a.allow))
                .or_default()
                .push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
    groups.sort();
    for pods in groups {
        let target = pods[0];
        if !reachable(snap, target, &callers) {
            let pod = &r.pods[target];
            let more = match pods.len() - 1 {
                0 => String::new(),
                n => format!(" (and {n} more pods with the same policies)"),
            };
            out.push(Diagnostic::about(
                Severity::Warning,
                Code::AuthzUnreachable,
                ResourceRef::new("Pod", Some(pod.namespace()), pod.name()),
                format!(
                    "its ALLOW policies admit none of the {} in-mesh pods of the configuration \
                     on any of its ports{more}",
                    callers.len()
                ),
            ));
        }
    }
}

/// Whether some other mesh pod may connect to pod `target` on one of its ports; `true` when the
/// pod declares no port to judge.
fn reachable(snap: &Snapshot, target: usize, callers: &[Caller]) -> bool {
    let pod = &snap.resources.pods[target];
    let ports = declared_ports(snap, target);
    let Some(destination_ip) = pod.ips().first().copied() else {
        return true;
    };
    if ports.is_empty() {
        return true;
    }
    let me = PodKey::new(pod.namespace(), pod.name());
    callers.iter().filter(|c| c.key != me).any(|c| {
        ports.iter().any(|port| {
            let req = AuthzRequest {
                principal: Some(&c.identity),
                source_ip: c.ip,
                destination_ip,
                destination_port: *port,
                sni: None,
            };
            snap.authz.decide(target, &req).action == AuthzAction::Allow
        })
    })
}

/// Container ports and the target ports of the pod's Services.
fn declared_ports(snap: &Snapshot, i: usize) -> BTreeSet<u16> {
    let pod = &snap.resources.pods[i];
    let containers = pod.spec.containers.iter().flat_map(|c| &c.ports);
    let mut ports: BTreeSet<u16> = containers.map(|p| p.container_port).collect();
    for s in &snap.pod_services[i] {
        let svc = &snap.resources.services[*s];
        ports.extend(
            svc.spec
                .ports
                .iter()
                .filter_map(|sp| sp.target_port_on(pod)),
        );
    }
    ports
}
