//! Turns one AuthorizationPolicy into L4 matchers, with Istio's rules for TCP traffic.
//!
//! Sources: istio.io "Security concepts" (*Using Istio authorization on plain TCP protocols*,
//! *Dependency on mutual TLS*), the AuthorizationPolicy and Conditions references, istio/api
//! `security/v1beta1/authorization_policy.proto`, and istiod's TCP translation
//! (`pilot/pkg/security/authz/model/model.go` `New` / `Generate` / `checkError`,
//! `generator.go`, `trustdomain/bundle.go`, `builder/builder.go` `isDryRun`).
//!
//! - **HTTP-only fields** (`requestPrincipals`, `notRequestPrincipals`, `hosts`, `notHosts`,
//!   `methods`, `notMethods`, `paths`, `notPaths`, `when` keys `request.*`) cannot be evaluated on
//!   a TCP connection. In an ALLOW policy the whole rule is dropped and never matches (a smaller
//!   allow); in DENY, AUDIT and CUSTOM policies only those values are dropped and the rest of the
//!   rule applies (a wider deny) — a rule left with nothing to test then matches every connection.
//!   `experimental.envoy.filters.*` keys read Envoy metadata that sockmesh does not have: treated
//!   the same way.
//! - **Invalid values** (an unparsable IP block or port) follow the same asymmetry (Istio's
//!   `checkError`): the ALLOW rule is dropped, the DENY value is ignored.
//! - **Unknown `when` keys** make the rule invalid for every action (istiod: "skipped invalid
//!   rule"); Istio's admission webhook rejects such policies outright.
//! - **L4 keys**: `source.ip`, `remote.ip` (the source address at L4), `source.namespace`,
//!   `source.principal`, `destination.ip`, `destination.port`, `connection.sni`.
//!   `remoteIpBlocks` is the source address too (sidecar semantics; istiod's ambient translation
//!   for ztunnel treats it as HTTP-only instead).
//! - **Trust domain aliases**: a principal `<td>/ns/<ns>/sa/<sa>` whose `<td>` is ours, an alias,
//!   or `cluster.local` (which always means "the local trust domain") is expanded to one principal
//!   per trust domain of the bundle; a principal with another trust domain is kept as written
//!   (and `check` warns). A `<td>` containing `*` is kept as written.
//! - **Dry run**: `istio.io/dry-run` is parsed like Go's `strconv.ParseBool`; an unparsable value
//!   is an error and the policy is enforced.
//! - **targetRef / targetRefs**: Istio attaches such a policy only to gateways and waypoints and
//!   ignores it for ordinary workloads; sockmesh serves workloads, so the policy never applies.

use ipnet::IpNet;

use super::matcher::{Clause, CompiledRule, Condition, ServiceAccount, StrMatch};
use crate::policy::diagnostic::{Code, Diagnostic, Location, Severity};
use crate::policy::model::authorization::{self as model, DRY_RUN_ANNOTATION};
use crate::policy::model::{AuthorizationPolicy, AuthzPolicyAction, ResourceRef};

/// Istio's name for the local trust domain, whatever the configured one is.
const CLUSTER_LOCAL: &str = "cluster.local";

/// One policy, ready for per-connection matching.
#[derive(Debug, Clone)]
pub(crate) struct CompiledPolicy {
    /// `namespace/name`.
    pub key: String,
    pub action: AuthzPolicyAction,
    pub dry_run: bool,
    /// Attached by targetRef: never applies to a workload.
    pub detached: bool,
    /// One entry per spec rule, by index; `None` never matches at L4.
    pub rules: Vec<Option<CompiledRule>>,
    /// What `check` reports about this policy.
    pub findings: Vec<Diagnostic>,
}

impl CompiledPolicy {
    /// The index of the first rule that matches.
    pub(crate) fn first_match(&self, f: &super::matcher::Facts<'_>) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.matches(f)))
    }
}

/// Trust domains whose principals are equivalent: ours first, then the aliases.
pub(crate) struct TrustBundle<'a> {
    pub domains: Vec<&'a str>,
}

impl TrustBundle<'_> {
    /// Whether `td` is ours, an alias, or `cluster.local`.
    pub(crate) fn is_local(&self, td: &str) -> bool {
        td == CLUSTER_LOCAL || self.domains.contains(&td)
    }
}

pub(crate) fn compile(p: &AuthorizationPolicy, bundle: &TrustBundle<'_>) -> CompiledPolicy {
    let ns = p.metadata.namespace();
    let mut c = Compiler {
        resource: ResourceRef::new("AuthorizationPolicy", Some(ns), &p.metadata.name),
        namespace: ns,
        action: p.spec.action,
        bundle,
        findings: Vec::new(),
        http: Vec::new(),
        invalid: false,
        unknown: false,
    };
    let dry_run = c.dry_run(p);
    if p.spec.has_target_ref() {
        c.note(
            Severity::Warning,
            Code::AuthzTargetRef,
            "spec.targetRef",
            "targetRef attaches a policy to gateways and waypoints only; Istio ignores it for \
             workloads, and so does sockmesh"
                .into(),
        );
    }
    if p.spec.action == AuthzPolicyAction::Custom && !dry_run {
        c.note(
            Severity::Error,
            Code::AuthzCustomUnsupported,
            "spec.action",
            "CUSTOM is not supported: connections its rules match are denied (fails closed, as \
             Istio does for a provider it cannot configure)"
                .into(),
        );
    }
    let rules = p
        .spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| r.as_ref().and_then(|r| c.rule(i, r)))
        .collect();
    CompiledPolicy {
        key: format!("{ns}/{}", p.metadata.name),
        action: p.spec.action,
        dry_run,
        detached: p.spec.has_target_ref(),
        rules,
        findings: c.findings,
    }
}

/// Compilation state of one policy; `http`, `invalid` and `unknown` describe the current rule.
struct Compiler<'a> {
    resource: ResourceRef,
    namespace: &'a str,
    action: AuthzPolicyAction,
    bundle: &'a TrustBundle<'a>,
    findings: Vec<Diagnostic>,
    http: Vec<String>,
    invalid: bool,
    unknown: bool,
}

impl Compiler<'_> {
    fn note(&mut self, severity: Severity, code: Code, field: &str, message: String) {
        self.findings.push(Diagnostic {
            severity,
            code,
            location: Location {
                resource: Some(self.resource.clone()),
                field: Some(field.to_owned()),
                ..Location::default()
            },
            message,
        });
    }

    fn dry_run(&mut self, p: &AuthorizationPolicy) -> bool {
        let Some(v) = p.metadata.annotations.get(DRY_RUN_ANNOTATION) else {
            return false;
        };
        match v.as_str() {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            other => {
                let msg = format!("{DRY_RUN_ANNOTATION}: {other:?} is not a boolean; enforced");
                self.note(
                    Severity::Warning,
                    Code::InvalidValue,
                    "metadata.annotations",
                    msg,
                );
                false
            }
        }
    }

    /// `None` when the rule can never match at L4.
    fn rule(&mut self, i: usize, r: &model::Rule) -> Option<CompiledRule> {
        (self.http, self.invalid, self.unknown) = (Vec::new(), false, false);
        let at = format!("spec.rules[{i}]");
        let from = r
            .from
            .iter()
            .enumerate()
            .map(|(j, f)| {
                let at = format!("{at}.from[{j}].source");
                f.source
                    .as_ref()
                    .map_or_else(Vec::new, |s| self.source(&at, s))
            })
            .collect();
        let to =
            r.to.iter()
                .enumerate()
                .map(|(j, t)| {
                    let at = format!("{at}.to[{j}].operation");
                    t.operation
                        .as_ref()
                        .map_or_else(Vec::new, |o| self.operation(&at, o))
                })
                .collect();
        let when = r
            .when
            .iter()
            .enumerate()
            .filter_map(|(j, w)| self.condition(&format!("{at}.when[{j}]"), w))
            .collect();
        self.report_http(&at);
        let dropped = self.unknown
            || (self.action == AuthzPolicyAction::Allow && (self.invalid || !self.http.is_empty()));
        (!dropped).then_some(CompiledRule { from, to, when })
    }

    fn report_http(&mut self, at: &str) {
        if self.http.is_empty() {
            return;
        }
        let effect = match self.action {
            AuthzPolicyAction::Allow => "this ALLOW rule never matches at L4",
            _ => "at L4 this rule applies without them (wider than written)",
        };
        let msg = format!("HTTP-only {}: {effect}", self.http.join(", "));
        self.note(Severity::Warning, Code::AuthzHttpOnly, at, msg);
    }

    fn source(&mut self, at: &str, s: &model::Source) -> Vec<Condition> {
        self.http_only(at, "requestPrincipals", &s.request_principals);
        self.http_only(at, "notRequestPrincipals", &s.not_request_principals);
        let mut out = Vec::new();
        if let Some(c) = self.principals(at, &s.principals, &s.not_principals) {
            out.push(Condition::Principal(c));
        }
        if let Some(c) = strings(&s.namespaces, &s.not_namespaces) {
            out.push(Condition::Namespace(c));
        }
        let sa = |v: &String| {
            let (ns, name) = v.split_once('/').unwrap_or((self.namespace, v));
            ServiceAccount {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            }
        };
        if !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty() {
            out.push(Condition::ServiceAccount(Clause {
                values: s.service_accounts.iter().map(sa).collect(),
                not_values: s.not_service_accounts.iter().map(sa).collect(),
            }));
        }
        for (field, yes, no) in [
            ("ipBlocks", &s.ip_blocks, &s.not_ip_blocks),
            (
                "remoteIpBlocks",
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
            ),
        ] {
            if let Some(c) = self.parsed(&format!("{at}.{field}"), yes, no, parse_ip_block) {
                out.push(Condition::SourceIp(c));
            }
        }
        out
    }

    fn operation(&mut self, at: &str, o: &model::Operation) -> Vec<Condition> {
        for (field, values) in [
            ("hosts", &o.hosts),
            ("notHosts", &o.not_hosts),
            ("methods", &o.methods),
            ("notMethods", &o.not_methods),
            ("paths", &o.paths),
            ("notPaths", &o.not_paths),
        ] {
            self.http_only(at, field, values);
        }
        self.parsed(&format!("{at}.ports"), &o.ports, &o.not_ports, parse_port)
            .map(Condition::DestinationPort)
            .into_iter()
            .collect()
    }

    fn condition(&mut self, at: &str, w: &model::Condition) -> Option<Condition> {
        let (yes, no) = (&w.values, &w.not_values);
        let ip = |c: &mut Self| c.parsed(at, yes, no, parse_ip_block);
        match w.key.as_str() {
            "source.ip" | "remote.ip" => ip(self).map(Condition::SourceIp),
            "destination.ip" => ip(self).map(Condition::DestinationIp),
            "destination.port" => self
                .parsed(at, yes, no, parse_port)
                .map(Condition::DestinationPort),
            "source.namespace" => strings(yes, no).map(Condition::Namespace),
            "source.principal" => self.principals(at, yes, no).map(Condition::Principal),
            "connection.sni" => strings(yes, no).map(Condition::Sni),
            k if k.starts_with("request.") || k.starts_with("experimental.envoy.filters.") => {
                self.http.push(format!("when {k}"));
                None
            }
            k => {
                self.unknown = true;
                let msg = format!("unknown condition key {k:?}: the rule is invalid and skipped");
                self.note(Severity::Error, Code::AuthzUnknownKey, at, msg);
                None
            }
        }
    }

    fn http_only(&mut self, at: &str, field: &str, values: &[String]) {
        if !values.is_empty() {
            let short = at.rsplit('.').next().unwrap_or(at);
            self.http.push(format!("{short}.{field}"));
        }
    }

    /// Parses both lists, recording invalid values; `None` when both lists are empty as written.
    fn parsed<T>(
        &mut self,
        at: &str,
        yes: &[String],
        no: &[String],
        parse: fn(&str) -> Option<T>,
    ) -> Option<Clause<T>> {
        if yes.is_empty() && no.is_empty() {
            return None;
        }
        let mut list = |values: &[String]| -> Vec<T> {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match parse(v) {
                    Some(t) => out.push(t),
                    None => {
                        self.invalid = true;
                        let effect = match self.action {
                            AuthzPolicyAction::Allow => "the rule never matches",
                            _ => "the value is ignored",
                        };
                        let msg = format!("invalid value {v:?}: {effect}");
                        self.note(Severity::Warning, Code::InvalidValue, at, msg);
                    }
                }
            }
            out
        };
        let values = list(yes);
        let not_values = list(no);
        Some(Clause { values, not_values })
    }

    /// Principal patterns with trust domain aliases expanded.
    fn principals(&mut self, at: &str, yes: &[String], no: &[String]) -> Option<Clause<StrMatch>> {
        if yes.is_empty() && no.is_empty() {
            return None;
        }
        let values = self.expand(at, yes);
        let not_values = self.expand(at, no);
        Some(Clause { values, not_values })
    }

    fn expand(&mut self, at: &str, principals: &[String]) -> Vec<StrMatch> {
        let mut out = Vec::new();
        for p in principals {
            let parts: Vec<&str> = p.split('/').collect();
            let td = parts[0];
            if parts.len() != 5 || td.contains('*') {
                out.push(StrMatch::parse(p));
            } else if self.bundle.is_local(td) {
                let rest = &p[td.len()..];
                out.extend(
                    self.bundle
                        .domains
                        .iter()
                        .map(|d| StrMatch::parse(&format!("{d}{rest}"))),
                );
            } else {
                let msg = format!(
                    "principal {p:?} is in trust domain {td:?}, which is neither ours nor an alias"
                );
                self.note(Severity::Warning, Code::AuthzForeignTrustDomain, at, msg);
                out.push(StrMatch::parse(p));
            }
        }
        out
    }
}

fn strings(yes: &[String], no: &[String]) -> Option<Clause<StrMatch>> {
    let parse = |v: &[String]| v.iter().map(|s| StrMatch::parse(s)).collect();
    (!yes.is_empty() || !no.is_empty()).then(|| Clause {
        values: parse(yes),
        not_values: parse(no),
    })
}

/// A CIDR, or a single address as a host route.
fn parse_ip_block(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse().ok()
}
