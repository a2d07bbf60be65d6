//! Object metadata, label selectors and the keys used to name resources.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The part of Kubernetes `metadata` that policy decisions read.
///
/// Bookkeeping fields (`resourceVersion`, `managedFields`, ...) are accepted without a warning by the
/// loader's allow-list rather than modelled here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 as the API server prints it (`2024-05-23T00:22:29Z`), so string order is time order.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

impl ObjectMeta {
    /// Namespace with Kubernetes' default for namespaced objects that omit it.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    /// Age order used wherever Istio picks "the oldest": creation time, then name, then namespace.
    /// A missing timestamp sorts first, as Go's zero time does.
    pub fn age_key(&self) -> (&str, &str, &str) {
        (
            self.creation_timestamp.as_deref().unwrap_or(""),
            &self.name,
            self.namespace(),
        )
    }
}

/// `selector` / `workloadSelector`: only `matchLabels` exists on the Istio resources we read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default, alias = "labels")]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// Istio treats an empty selector exactly like an absent one.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty()
    }

    /// Label subset match.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        subset_of(&self.match_labels, labels)
    }
}

/// True when every `selector` label is present with the same value in `labels`.
pub fn subset_of(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Which resource made a decision, as printed by `explain` and `check`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceRef {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ResourceRef {
    pub fn new(kind: &str, namespace: Option<&str>, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// `namespace/name` of a pod, the key the data path uses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for PodKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::new(ns, name))
            }
            _ => Err(format!("expected NAMESPACE/POD, got {s:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_key_parses_and_rejects() {
        assert_eq!("a/b".parse::<PodKey>().unwrap(), PodKey::new("a", "b"));
        for bad in ["a", "/b", "a/", "a/b/c"] {
            assert!(bad.parse::<PodKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        let labels = BTreeMap::from([("app".to_owned(), "x".to_owned())]);
        assert!(WorkloadSelector::default().matches(&labels));
        let sel = WorkloadSelector {
            match_labels: BTreeMap::from([("app".to_owned(), "y".to_owned())]),
        };
        assert!(!sel.matches(&labels));
    }
}
