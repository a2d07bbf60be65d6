//! L4 authorization: Istio's `AuthorizationPolicy` decided per inbound connection.
//!
//! The proxy calls `Snapshot::authorize` once per arriving connection (every arrival path),
//! with the identity verified by mTLS, never one claimed by the peer:
//!
//! ```ignore
//! let d = snap.authorize(&pod, &AuthzRequest {
//!     principal: peer_spiffe_id.as_deref(), // None for plaintext
//!     source_ip, destination_ip, destination_port: target_port, sni,
//! });
//! if d.action == AuthzAction::Deny { /* reset, count policy_denied, log d.reason */ }
//! ```
//!
//! Precedence (istio.io "Authorization Policy Precedence"; ztunnel `assert_rbac`): CUSTOM, then
//! DENY, then ALLOW. A matching CUSTOM policy denies (sockmesh has no external authorizer, so it
//! fails closed as istiod does for a provider it cannot configure); any matching DENY denies; if
//! ALLOW policies apply, one of them must match, otherwise the connection is denied; with no
//! ALLOW policy it is allowed. `spec: {}` is an ALLOW policy without rules: it applies and never
//! matches (allow-nothing); `rules: [{}]` matches everything. AUDIT never changes the decision;
//! the first matching AUDIT policy is reported in [`AuthzDecision::audited`].
//!
//! Dry-run policies (`istio.io/dry-run: "true"`) are never enforced.
//! [`AuthzDecision::dry_run`] is the decision the connection would get if they were enforced
//! together with the enforced ones (the question before turning one on). That differs from
//! Envoy's shadow engine, which evaluates the dry-run policies on their own. Dry-run AUDIT
//! policies are not reported.
//!
//! How fields and matchers behave at L4 is documented in [`compile`] and [`matcher`], which
//! policies apply to a pod in [`index`].

mod compile;
mod index;
mod matcher;

use std::net::IpAddr;

use serde::Serialize;

pub(crate) use compile::TrustBundle;
pub(crate) use index::AuthzIndex;
use matcher::Facts;

/// One inbound connection as the destination's proxy sees it.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    /// Verified peer SPIFFE id (`spiffe://td/ns/x/sa/y`) from the mTLS certificate; `None` for
    /// plaintext.
    pub principal: Option<&'a str>,
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
    /// The workload (target) port the connection is for, which `ports` and `destination.port`
    /// match.
    pub destination_port: u16,
    /// TLS server name the client sent, for `connection.sni`.
    pub sni: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    Allow,
    Deny,
}

impl AuthzAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthzAction::Allow => "ALLOW",
            AuthzAction::Deny => "DENY",
        }
    }
}

/// What dry-run policies would change: the decision with them enforced too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRunOutcome {
    pub action: AuthzAction,
    /// `namespace/name` of the deciding policy (dry-run or not), as in [`AuthzDecision::policy`].
    pub policy: Option<String>,
    pub rule: Option<usize>,
    pub reason: String,
}

/// The answer for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzDecision {
    /// What is enforced.
    pub action: AuthzAction,
    /// `namespace/name` of the deciding policy: the matching CUSTOM or DENY, or the matching
    /// ALLOW. `None` when no policy applies or when ALLOW policies apply and none matched.
    pub policy: Option<String>,
    /// Index of the matched rule in the deciding policy.
    pub rule: Option<usize>,
    /// One line for logs and the access log, e.g. `denied by DENY policy ns/name rule 0`.
    pub reason: String,
    /// Present when dry-run policies apply to the pod.
    pub dry_run: Option<DryRunOutcome>,
    /// `namespace/name` of the first matching AUDIT policy.
    pub audited: Option<String>,
}

/// The policy lists one evaluation uses, in precedence order.
struct Lists<'a> {
    custom: &'a [u32],
    deny: &'a [u32],
    allow: &'a [u32],
}

/// A decision before it is phrased.
struct Verdict {
    action: AuthzAction,
    /// Deciding policy and rule.
    by: Option<(u32, usize)>,
    /// How many ALLOW policies applied (for the "none matched" reason).
    allows: usize,
}

impl AuthzIndex {
    /// The decision for the pod at snapshot index `pod`.
    pub(crate) fn decide(&self, pod: usize, req: &AuthzRequest<'_>) -> AuthzDecision {
        let (principal, namespace, service_account) = Facts::peer(req.principal);
        let f = Facts {
            principal,
            namespace,
            service_account,
            source_ip: req.source_ip,
            destination_ip: req.destination_ip,
            destination_port: req.destination_port,
            sni: req.sni,
        };
        let a = &self.by_pod[pod];
        let enforced = Lists {
            custom: &a.custom,
            deny: &a.deny,
            allow: &a.allow,
        };
        let verdict = self.evaluate(&enforced, &[], &f);
        let dry_run = (!a.dry_run.is_empty()).then(|| {
            let v = self.evaluate(&enforced, &a.dry_run, &f);
            let (policy, rule, reason) = self.phrase(&v);
            DryRunOutcome {
                action: v.action,
                policy,
                rule,
                reason,
            }
        });
        let audited = self
            .first_match(a.audit.iter().copied(), &f)
            .map(|(i, _)| self.policies[i as usize].key.clone());
        let (policy, rule, reason) = self.phrase(&verdict);
        AuthzDecision {
            action: verdict.action,
            policy,
            rule,
            reason,
            dry_run,
            audited,
        }
    }

    /// Precedence over the enforced lists plus `extra` (dry-run policies, by their action).
    fn evaluate(&self, l: &Lists<'_>, extra: &[u32], f: &Facts<'_>) -> Verdict {
        use crate::policy::model::AuthzPolicyAction as A;
        let of = |action: A| {
            extra
                .iter()
                .copied()
                .filter(move |i| self.policies[*i as usize].action == action)
        };
        let deny = |by| Verdict {
            action: AuthzAction::Deny,
            by: Some(by),
            allows: 0,
        };
        if let Some(by) = self.first_match(l.custom.iter().copied().chain(of(A::Custom)), f) {
            return deny(by);
        }
        if let Some(by) = self.first_match(l.deny.iter().copied().chain(of(A::Deny)), f) {
            return deny(by);
        }
        let allows = l.allow.len() + of(A::Allow).count();
        let by = self.first_match(l.allow.iter().copied().chain(of(A::Allow)), f);
        let action = if allows == 0 || by.is_some() {
            AuthzAction::Allow
        } else {
            AuthzAction::Deny
        };
        Verdict { action, by, allows }
    }

    fn first_match(&self, ids: impl Iterator<Item = u32>, f: &Facts<'_>) -> Option<(u32, usize)> {
        ids.into_iter()
            .find_map(|i| self.policies[i as usize].first_match(f).map(|r| (i, r)))
    }

    /// Deciding policy, rule and the one-line reason.
    fn phrase(&self, v: &Verdict) -> (Option<String>, Option<usize>, String) {
        let Some((i, rule)) = v.by else {
            let reason = match v.action {
                AuthzAction::Allow => "allowed: no ALLOW policy applies".to_owned(),
                AuthzAction::Deny => format!(
                    "denied: {} ALLOW {} and no rule matched",
                    v.allows,
                    if v.allows == 1 {
                        "policy applies"
                    } else {
                        "policies apply"
                    }
                ),
            };
            return (None, None, reason);
        };
        let p = &self.policies[i as usize];
        let dry = if p.dry_run { "dry-run " } else { "" };
        let reason = match p.action {
            crate::policy::model::AuthzPolicyAction::Custom => format!(
                "denied by {dry}CUSTOM policy {} rule {rule} (CUSTOM is not supported and fails closed)",
                p.key
            ),
            action => {
                let verb = if v.action == AuthzAction::Allow {
                    "allowed"
                } else {
                    "denied"
                };
                format!(
                    "{verb} by {dry}{} policy {} rule {rule}",
                    action.as_str(),
                    p.key
                )
            }
        };
        (Some(p.key.clone()), Some(rule), reason)
    }
}

#[cfg(test)]
mod tests;
