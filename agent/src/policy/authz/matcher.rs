//! Compiled conditions and how one connection is matched against them.
//!
//! - Strings (principals, namespaces, SNI) match as Istio documents: `abc` exact, `abc*` prefix,
//!   `*abc` suffix, `*` presence (any non-empty value). An absent value (plaintext has no principal
//!   and no namespace) matches no positive form and therefore satisfies every negative one: a
//!   `notPrincipals: ["*"]` DENY refuses plaintext, as with Envoy's `not_id { authenticated }`.
//!   Istio's sidecar builds the namespace matcher as the regex `.*/ns/<v>/.*` with every `*` of
//!   the value widened, so an infix `a*b` is a wildcard there; here, as in ztunnel, it is exact.
//! - Principals are written without `spiffe://` (`cluster.local/ns/x/sa/y`) and compared with the
//!   peer's verified SPIFFE id minus that prefix (ztunnel `StringMatch::matches_principal`).
//! - `source.namespace` and service accounts come from the peer's verified id
//!   (`spiffe://<td>/ns/<ns>/sa/<sa>`), never from the source address.
//! - IP blocks are CIDRs (a single IP is a /32 or /128); ports are exact numbers.

use std::net::IpAddr;

use ipnet::IpNet;

/// One Istio string pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Presence,
}

impl StrMatch {
    /// `*` presence, `*x` suffix, `x*` prefix, anything else exact (checked in that order, as Istio).
    pub(crate) fn parse(v: &str) -> Self {
        if v == "*" {
            StrMatch::Presence
        } else if let Some(s) = v.strip_prefix('*') {
            StrMatch::Suffix(s.to_owned())
        } else if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix(p.to_owned())
        } else {
            StrMatch::Exact(v.to_owned())
        }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        let Some(v) = value else { return false };
        match self {
            StrMatch::Exact(e) => v == e,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
            StrMatch::Suffix(s) => v.ends_with(s.as_str()),
            StrMatch::Presence => !v.is_empty(),
        }
    }
}

/// A service account named by `serviceAccounts`: namespace and name, trust domain ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

/// `values` / `notValues` of one attribute: any positive value (when there are some) and no
/// negative value must match. Both empty (every value dropped as HTTP-only or invalid in a DENY
/// rule) matches anything, as Envoy's `any: true` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause<T> {
    pub values: Vec<T>,
    pub not_values: Vec<T>,
}

impl<T> Clause<T> {
    fn matches(&self, pred: impl Fn(&T) -> bool) -> bool {
        (self.values.is_empty() || self.values.iter().any(&pred))
            && !self.not_values.iter().any(&pred)
    }
}

/// One L4 attribute test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Condition {
    Principal(Clause<StrMatch>),
    Namespace(Clause<StrMatch>),
    ServiceAccount(Clause<ServiceAccount>),
    /// `ipBlocks`, `remoteIpBlocks`, `source.ip`, `remote.ip`: without proxy protocol or XFF at
    /// L4, the remote address is the packet's source address.
    SourceIp(Clause<IpNet>),
    DestinationIp(Clause<IpNet>),
    DestinationPort(Clause<u16>),
    Sni(Clause<StrMatch>),
}

/// The connection as the matchers see it, derived once per decision.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    /// Verified SPIFFE id without `spiffe://`.
    pub principal: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub service_account: Option<&'a str>,
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    pub sni: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// Splits a verified `spiffe://<td>/ns/<ns>/sa/<sa>` id. An id of another shape keeps its
    /// principal but has no namespace or service account.
    pub(crate) fn peer(
        spiffe_id: Option<&'a str>,
    ) -> (Option<&'a str>, Option<&'a str>, Option<&'a str>) {
        let Some(principal) = spiffe_id.and_then(|id| id.strip_prefix("spiffe://")) else {
            return (None, None, None);
        };
        let mut parts = principal.split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(_), Some("ns"), Some(ns), Some("sa"), Some(sa)) if parts.next().is_none() => {
                (Some(principal), Some(ns), Some(sa))
            }
            _ => (Some(principal), None, None),
        }
    }
}

impl Condition {
    pub(crate) fn matches(&self, f: &Facts<'_>) -> bool {
        match self {
            Condition::Principal(c) => c.matches(|m| m.matches(f.principal)),
            Condition::Namespace(c) => c.matches(|m| m.matches(f.namespace)),
            Condition::ServiceAccount(c) => c.matches(|sa| {
                f.namespace == Some(sa.namespace.as_str())
                    && f.service_account == Some(sa.name.as_str())
            }),
            Condition::SourceIp(c) => c.matches(|net| net.contains(&f.source_ip)),
            Condition::DestinationIp(c) => c.matches(|net| net.contains(&f.destination_ip)),
            Condition::DestinationPort(c) => c.matches(|p| *p == f.destination_port),
            Condition::Sni(c) => c.matches(|m| m.matches(f.sni)),
        }
    }
}

/// All conditions hold (an empty list holds).
pub(crate) fn all(conditions: &[Condition], f: &Facts<'_>) -> bool {
    conditions.iter().all(|c| c.matches(f))
}

/// A compiled rule: one `from` (if any), one `to` (if any) and every `when` condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CompiledRule {
    pub from: Vec<Vec<Condition>>,
    pub to: Vec<Vec<Condition>>,
    pub when: Vec<Condition>,
}

impl CompiledRule {
    pub(crate) fn matches(&self, f: &Facts<'_>) -> bool {
        let any = |list: &[Vec<Condition>]| list.is_empty() || list.iter().any(|c| all(c, f));
        any(&self.from) && any(&self.to) && all(&self.when, f)
    }
}
