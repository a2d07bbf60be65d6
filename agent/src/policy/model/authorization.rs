//! `security.istio.io` AuthorizationPolicy (v1beta1, v1), as `kubectl get -o yaml` prints it.
//!
//! The model keeps every field of the API, HTTP-only ones included, so that the resolver can apply
//! Istio's rules for TCP traffic to them (and `check` can name them) instead of the loader
//! dropping them as unknown. What the fields mean at L4 is decided in [`crate::policy::authz`].

use serde::{Deserialize, Deserializer};

use super::meta::{ObjectMeta, WorkloadSelector};

/// Annotation that turns a policy into a dry run: evaluated and reported, never enforced.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizationPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    /// Gateway / waypoint attachment; Istio ignores such a policy for ordinary workloads.
    #[serde(default)]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default)]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub action: AuthzPolicyAction,
    /// The extension of a CUSTOM policy.
    #[serde(default)]
    pub provider: Option<ExtensionProvider>,
    /// `None` and `Some([])` both mean "matches nothing"; a rule `{}` matches everything.
    #[serde(default)]
    pub rules: Vec<Option<Rule>>,
}

impl AuthorizationPolicySpec {
    /// Whether `targetRef` or `targetRefs` is set.
    pub fn has_target_ref(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

/// What the policy does when one of its rules matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzPolicyAction {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

impl AuthzPolicyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthzPolicyAction::Allow => "ALLOW",
            AuthzPolicyAction::Deny => "DENY",
            AuthzPolicyAction::Audit => "AUDIT",
            AuthzPolicyAction::Custom => "CUSTOM",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
}

/// Matches when one `from`, one `to` and every `when` match; absent lists match anything.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Rule {
    #[serde(default)]
    pub from: Vec<From>,
    #[serde(default)]
    pub to: Vec<To>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct From {
    #[serde(default)]
    pub source: Option<Source>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct To {
    #[serde(default)]
    pub operation: Option<Operation>,
}

/// Who connects; the fields are ANDed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub not_request_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    /// `NAME` (the policy's namespace) or `NAMESPACE/NAME`.
    #[serde(default)]
    pub service_accounts: Vec<String>,
    #[serde(default)]
    pub not_service_accounts: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default)]
    pub not_remote_ip_blocks: Vec<String>,
}

/// What is connected to; the fields are ANDed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub not_hosts: Vec<String>,
    /// Strings in the API; bare numbers, which hand-written files use, are accepted too.
    #[serde(default, deserialize_with = "numbers_as_strings")]
    pub ports: Vec<String>,
    #[serde(default, deserialize_with = "numbers_as_strings")]
    pub not_ports: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub not_methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub not_paths: Vec<String>,
}

/// `when` entry: an Istio attribute and the values it must (not) have.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub not_values: Vec<String>,
}

/// A list of strings whose items may also be written as bare numbers (`ports: [8080]`).
fn numbers_as_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Item {
        Number(u64),
        Text(String),
    }
    let items = Vec::<Item>::deserialize(d)?;
    Ok(items
        .into_iter()
        .map(|i| match i {
            Item::Number(n) => n.to_string(),
            Item::Text(s) => s,
        })
        .collect())
}
