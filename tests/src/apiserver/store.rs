//! The cluster state behind the API server: objects per collection, one resource version counter
//! for all of them (as etcd's revision), and each collection's change log that watches replay.
use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::resources::{BUILTIN, ISTIO, LEGACY_ISTIO, Resource};

/// `(namespace, name)`; cluster-scoped objects have an empty namespace.
pub(crate) type Key = (String, String);

/// A watch event as the API sends it: `ADDED`, `MODIFIED`, `DELETED` or `BOOKMARK`.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) kind: &'static str,
    pub(crate) object: Value,
}

#[derive(Debug, Default)]
pub(crate) struct Collection {
    pub(crate) objects: BTreeMap<Key, Value>,
    pub(crate) log: Vec<Change>,
}

#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) served: Vec<Resource>,
    pub(crate) collections: HashMap<(&'static str, &'static str), Collection>,
    pub(crate) rv: u64,
    /// Watches that start or resume before this resource version get `410 Gone`.
    pub(crate) floor: u64,
    /// Bumped to end every open watch stream.
    pub(crate) generation: u64,
    pub(crate) down: bool,
    uid_seq: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            served: BUILTIN.to_vec(),
            collections: HashMap::new(),
            rv: 1,
            floor: 0,
            generation: 0,
            down: false,
            uid_seq: 0,
        }
    }
}

impl Store {
    pub(crate) fn install_istio(&mut self) {
        self.serve(ISTIO);
    }

    pub(crate) fn install_legacy_istio(&mut self) {
        self.serve(LEGACY_ISTIO);
    }

    fn serve(&mut self, resources: &[Resource]) {
        for r in resources {
            if !self.served.contains(r) {
                self.served.push(r.clone());
            }
        }
    }

    /// The resource of `apiVersion` + `kind` (served or not: objects may be stored before their
    /// CRD is installed, as `kubectl apply` of a bundle with CRDs does).
    pub(crate) fn resource_of(api_version: &str, kind: &str) -> Option<Resource> {
        BUILTIN
            .iter()
            .chain(ISTIO)
            .chain(LEGACY_ISTIO)
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }

    pub(crate) fn served(&self, group: &str, version: &str, plural: &str) -> Option<Resource> {
        self.served
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    pub(crate) fn collection(&mut self, res: &Resource) -> &mut Collection {
        self.collections.entry((res.group, res.plural)).or_default()
    }

    pub(crate) fn get(&self, res: &Resource, key: &Key) -> Option<&Value> {
        self.collections
            .get(&(res.group, res.plural))?
            .objects
            .get(key)
    }

    /// Creates or replaces an object: fills `apiVersion`, `kind`, `uid`, `creationTimestamp`
    /// and a new `resourceVersion`, and logs `ADDED` or `MODIFIED` (not when `silently`: an
    /// event the watch never saw, as after compaction).
    pub(crate) fn put(&mut self, res: &Resource, mut obj: Value, silently: bool) -> Value {
        self.rv += 1;
        let rv = self.rv;
        obj["apiVersion"] = json!(res.api_version());
        obj["kind"] = json!(res.kind);
        if !res.namespaced
            && let Some(m) = obj["metadata"].as_object_mut()
        {
            m.remove("namespace");
        }
        let key = key_of(&obj);
        let old_uid = self
            .get(res, &key)
            .and_then(|o| o["metadata"]["uid"].as_str())
            .map(str::to_owned);
        let meta = &mut obj["metadata"];
        if meta["uid"].as_str().is_none() {
            let uid = old_uid.unwrap_or_else(|| {
                self.uid_seq += 1;
                format!("00000000-0000-4000-8000-{:012x}", self.uid_seq)
            });
            meta["uid"] = json!(uid);
        }
        if meta["creationTimestamp"].is_null() {
            meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        meta["resourceVersion"] = json!(rv.to_string());
        let c = self.collection(res);
        let kind = if c.objects.insert(key, obj.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if !silently {
            c.log.push(Change {
                rv,
                kind,
                object: obj.clone(),
            });
        }
        obj
    }

    pub(crate) fn delete(&mut self, res: &Resource, key: &Key) -> Option<Value> {
        let mut obj = self.collection(res).objects.remove(key)?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let rv = self.rv;
        self.collection(res).log.push(Change {
            rv,
            kind: "DELETED",
            object: obj.clone(),
        });
        Some(obj)
    }

    pub(crate) fn bookmark(&mut self, res: &Resource) {
        self.rv += 1;
        let rv = self.rv;
        let object = json!({"kind": res.kind, "apiVersion": res.api_version(),
                            "metadata": {"resourceVersion": rv.to_string()}});
        self.collection(res).log.push(Change {
            rv,
            kind: "BOOKMARK",
            object,
        });
    }
}

pub(crate) fn key_of(obj: &Value) -> Key {
    let m = &obj["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (s(&m["namespace"]), s(&m["name"]))
}

/// A list or watch request's filters: the namespace in the path and both selectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) namespace: Option<String>,
    pub(crate) fields: String,
    pub(crate) labels: String,
}

impl Filter {
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        self.namespace.as_deref().is_none_or(|want| want == ns)
            && terms(&self.fields).all(|t| field_term(obj, t))
            && label_terms(&self.labels).all(|t| label_term(&obj["metadata"]["labels"], t))
    }
}

fn terms(selector: &str) -> impl Iterator<Item = &str> {
    selector.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// `a.b=c`, `a.b==c` or `a.b!=c` against the object's fields, as the apiserver's field
/// selectors; an unknown operator matches nothing.
fn field_term(obj: &Value, term: &str) -> bool {
    let value = |field: &str| {
        let pointer = format!("/{}", field.replace('.', "/"));
        obj.pointer(&pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if let Some((field, want)) = term.split_once("!=") {
        value(field) != want
    } else if let Some((field, want)) = term.split_once("==").or_else(|| term.split_once('=')) {
        value(field) == want
    } else {
        false
    }
}

/// Splits on commas outside parentheses (`app in (a,b),tier=web`).
fn label_terms(selector: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&selector[start..]);
    out.into_iter().map(str::trim).filter(|s| !s.is_empty())
}

/// Equality, inequality, `in`/`notin` sets and existence (`key`, `!key`).
fn label_term(labels: &Value, term: &str) -> bool {
    let get = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
    let set = |rest: &str| -> Vec<String> {
        rest.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|s| s.trim().to_owned())
            .collect()
    };
    if let Some((k, rest)) = term.split_once(" notin ") {
        return get(k).is_none_or(|v| !set(rest).iter().any(|s| s == v));
    }
    if let Some((k, rest)) = term.split_once(" in ") {
        return get(k).is_some_and(|v| set(rest).iter().any(|s| s == v));
    }
    if let Some((k, want)) = term.split_once("!=") {
        return get(k) != Some(want.trim());
    }
    if let Some((k, want)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return get(k) == Some(want.trim());
    }
    if let Some(k) = term.strip_prefix('!') {
        return get(k).is_none();
    }
    get(term).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_as_the_apiserver_reads_them() {
        let pod = json!({"metadata": {"name": "a", "namespace": "ns",
                                      "labels": {"app": "web", "tier": "front"}},
                         "spec": {"nodeName": "n1"}});
        let f = |fields: &str, labels: &str| Filter {
            namespace: None,
            fields: fields.into(),
            labels: labels.into(),
        };
        assert!(f("spec.nodeName=n1", "").matches(&pod));
        assert!(!f("spec.nodeName=n2", "").matches(&pod));
        assert!(f("spec.nodeName!=n2,metadata.name==a", "").matches(&pod));
        assert!(f("", "app=web,tier").matches(&pod));
        assert!(f("", "app in (api, web),!gone").matches(&pod));
        assert!(!f("", "app notin (web)").matches(&pod));
        assert!(!f("", "app!=web").matches(&pod));
    }
}
