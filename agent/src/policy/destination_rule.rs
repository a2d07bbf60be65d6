//! DestinationRule lookup, following current Istio (`pilot/pkg/model/push_context.go`,
//! `destinationRule` / `SetDestinationRules`, and `MergeTrafficPolicy` for port-level settings).
//!
//! - Short hosts are expanded in the rule's namespace (`name` → `name.ns.svc.<domain>`); hosts with a
//!   dot or starting with `*` are kept as written.
//! - Lookup order: rules in the client's namespace (all of them unless exported elsewhere only), then
//!   rules exported from the service's namespace, then from the root namespace. In each namespace the
//!   most specific host wins (exact, then the longest wildcard); when that rule is not exported to the
//!   client there is no fallback to a less specific one, as in Istio.
//! - Rules for the same host in one namespace are merged oldest first; the top-level `trafficPolicy`
//!   is taken whole from the oldest rule that has one.
//! - A `portLevelSettings` entry for the Service port replaces the top-level `tls` only when it sets
//!   `tls` itself (Istio's code merges per component; the docs' "replaces the policy" reading would
//!   drop top-level TLS for a port entry that only tunes the load balancer).
//! - Rules with a `workloadSelector` are not merged or exported; they apply to matching clients in
//!   their namespace ahead of the selector-less rule for the same host.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::model::{ClientTlsSettings, DestinationRule, ResourceRef, TrafficPolicy};

/// The rule(s) that apply to one host in one namespace after merging.
#[derive(Debug, Clone)]
pub struct MergedRule {
    /// Index into the rule list of the rule whose `trafficPolicy` applies.
    pub policy_from: Option<usize>,
    /// All contributing rules, oldest first.
    pub rules: Vec<usize>,
    pub export_to: BTreeSet<String>,
    pub selector: Option<BTreeMap<String, String>>,
}

/// Client TLS settings chosen by a rule for one port.
#[derive(Debug, Clone, Copy)]
pub struct RuleTls<'a> {
    pub tls: &'a ClientTlsSettings,
    pub rule: &'a DestinationRule,
    /// Set when a `portLevelSettings` entry decided.
    pub port_level: Option<u16>,
}

impl RuleTls<'_> {
    pub fn resource(&self) -> ResourceRef {
        ResourceRef::new(
            "DestinationRule",
            Some(self.rule.metadata.namespace()),
            &self.rule.metadata.name,
        )
    }
}

#[derive(Debug, Default)]
struct HostMap {
    /// Exact host or `*`-prefixed pattern → variants (selector rules first, then the merged one).
    hosts: HashMap<String, Vec<MergedRule>>,
    /// Wildcard patterns keyed by their suffix after `*` (`.local`), so lookups need no allocation.
    suffixes: HashMap<String, Vec<MergedRule>>,
}

/// DestinationRules indexed by namespace and host.
#[derive(Debug, Default)]
pub struct DestinationRuleIndex {
    local: HashMap<String, HostMap>,
    exported: HashMap<String, HostMap>,
    /// Expanded host per rule, parallel to the rule list.
    hosts: Vec<String>,
}

/// Expands a short host in `namespace` as Istio's `ResolveShortnameToFQDN` does.
pub fn expand_host(host: &str, namespace: &str, domain: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc.{domain}")
    }
}

/// Whether a rule or entry host (possibly a wildcard) matches a concrete host.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern == host,
    }
}

impl DestinationRuleIndex {
    pub fn build(rules: &[DestinationRule], domain: &str) -> Self {
        let mut order: Vec<usize> = (0..rules.len()).collect();
        order.sort_by(|a, b| {
            rules[*a]
                .metadata
                .age_key()
                .cmp(&rules[*b].metadata.age_key())
        });
        let hosts: Vec<String> = rules
            .iter()
            .map(|r| expand_host(&r.spec.host, r.metadata.namespace(), domain))
            .collect();
        let mut index = Self {
            hosts,
            ..Self::default()
        };
        for i in order {
            let rule = &rules[i];
            let ns = rule.metadata.namespace().to_owned();
            let export_to: BTreeSet<String> = rule.spec.export_to.iter().cloned().collect();
            let selector = rule
                .spec
                .workload_selector
                .as_ref()
                .filter(|s| !s.is_empty())
                .map(|s| s.match_labels.clone());
            let private_only =
                selector.is_some() || (export_to.len() == 1 && export_to.contains("."));
            let visible_locally = selector.is_some()
                || export_to.is_empty()
                || export_to.contains("*")
                || export_to.contains(".")
                || export_to.contains(&ns);
            let host = index.hosts[i].clone();
            let entry = MergedRule {
                policy_from: rule.spec.traffic_policy.as_ref().map(|_| i),
                rules: vec![i],
                export_to,
                selector,
            };
            if visible_locally {
                insert(
                    index.local.entry(ns.clone()).or_default(),
                    &host,
                    entry.clone(),
                );
            }
            if !private_only {
                insert(index.exported.entry(ns).or_default(), &host, entry);
            }
        }
        index
    }

    /// The expanded host of rule `i`.
    pub fn host_of(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    /// The rule that applies to a client in `client_ns` (with `client_labels`) reaching `host`, a
    /// service or entry that lives in `service_ns`.
    pub fn lookup(
        &self,
        client_ns: &str,
        client_labels: &BTreeMap<String, String>,
        host: &str,
        service_ns: Option<&str>,
        root_ns: &str,
    ) -> Option<&MergedRule> {
        if let Some(variants) = self
            .local
            .get(client_ns)
            .and_then(|m| most_specific(m, host))
        {
            let pick = variants.iter().find(|v| {
                v.selector
                    .as_ref()
                    .is_none_or(|s| super::model::meta::subset_of(s, client_labels))
            });
            if pick.is_some() {
                return pick;
            }
        }
        let exported = |ns: &str| {
            let variants = self.exported.get(ns).and_then(|m| most_specific(m, host))?;
            let merged = variants.iter().find(|v| v.selector.is_none())?;
            let e = &merged.export_to;
            (e.is_empty() || e.contains("*") || e.contains(client_ns)).then_some(merged)
        };
        service_ns.and_then(exported).or_else(|| exported(root_ns))
    }
}

fn insert(map: &mut HostMap, host: &str, entry: MergedRule) {
    let variants = match host.strip_prefix('*') {
        Some(suffix) if !suffix.is_empty() => map.suffixes.entry(suffix.to_owned()).or_default(),
        _ => map.hosts.entry(host.to_owned()).or_default(),
    };
    if entry.selector.is_some() {
        let at = variants
            .iter()
            .position(|v| v.selector.is_none())
            .unwrap_or(variants.len());
        variants.insert(at, entry);
        return;
    }
    match variants.iter_mut().find(|v| v.selector.is_none()) {
        Some(merged) => {
            if merged.policy_from.is_none() {
                merged.policy_from = entry.policy_from;
            }
            merged.rules.extend(entry.rules);
            merged.export_to.extend(entry.export_to);
        }
        None => variants.push(entry),
    }
}

/// Exact host first, then wildcards from the longest suffix down to `*`.
fn most_specific<'a>(map: &'a HostMap, host: &str) -> Option<&'a Vec<MergedRule>> {
    if let Some(v) = map.hosts.get(host) {
        return Some(v);
    }
    let longest_first = host.match_indices('.').map(|(i, _)| &host[i..]);
    longest_first
        .filter_map(|suffix| map.suffixes.get(suffix))
        .next()
        .or_else(|| map.hosts.get("*"))
}

/// The TLS settings a traffic policy gives `port`.
pub fn tls_for_port(
    policy: &TrafficPolicy,
    port: u16,
) -> Option<(&ClientTlsSettings, Option<u16>)> {
    let port_level = policy
        .port_level_settings
        .iter()
        .find(|p| p.port.as_ref().is_some_and(|s| s.number == port))
        .and_then(|p| p.tls.as_ref());
    match port_level {
        Some(tls) => Some((tls, Some(port))),
        None => policy.tls.as_ref().map(|t| (t, None)),
    }
}

/// The TLS a merged rule sets for `port`, if any.
pub fn rule_tls<'a>(
    rules: &'a [DestinationRule],
    merged: &MergedRule,
    port: u16,
) -> Option<RuleTls<'a>> {
    let rule = &rules[merged.policy_from?];
    let (tls, port_level) = tls_for_port(rule.spec.traffic_policy.as_ref()?, port)?;
    Some(RuleTls {
        tls,
        rule,
        port_level,
    })
}

#[cfg(test)]
mod tests;
