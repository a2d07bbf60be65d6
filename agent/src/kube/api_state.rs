//! The objects the API source last saw, per watch, and whether every watch has listed once.
//!
//! Objects are kept as the API's JSON (with `apiVersion` and `kind` filled in, which list items
//! omit) so the policy model deserializes them exactly as it does the file source's YAML.
use std::{collections::BTreeMap, sync::Arc};

use ::kube::api::DynamicObject;
use ::kube::runtime::watcher::Event;
use serde_json::Value;

/// One watch: a kind, narrowed by a field selector (pods of this node, one named Secret).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId {
    pub kind: String,
    pub fields: Option<String>,
}

/// `(namespace, name)`; cluster-scoped objects have an empty namespace.
pub type ObjectKey = (String, String);

#[derive(Clone, Debug, Default)]
struct Watched {
    objects: BTreeMap<ObjectKey, Arc<Value>>,
    listed: bool,
}

/// What the source publishes. Cheap to clone: objects are shared.
#[derive(Clone, Debug, Default)]
pub struct ApiState {
    watches: BTreeMap<WatchId, Arc<Watched>>,
    discovered: bool,
}

impl ApiState {
    /// True once the API's optional kinds are known and every watch has completed its first list;
    /// stays true through reconnects and re-lists, which keep the last known objects meanwhile.
    pub fn synced(&self) -> bool {
        self.discovered && self.watches.values().all(|w| w.listed)
    }

    /// Every object of `kind` across its watches, ordered by namespace and name.
    pub fn objects(&self, kind: &str) -> Vec<&Value> {
        let mut all: Vec<(&ObjectKey, &Value)> = self
            .watches
            .iter()
            .filter(|(id, _)| id.kind == kind)
            .flat_map(|(_, w)| w.objects.iter().map(|(k, v)| (k, &**v)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all.into_iter().map(|(_, v)| v).collect()
    }

    /// The watches in place (the kinds the cluster serves, the Secrets rules name).
    pub fn watches(&self) -> impl Iterator<Item = &WatchId> {
        self.watches.keys()
    }

    pub(super) fn set_discovered(&mut self) {
        self.discovered = true;
    }

    pub(super) fn register(&mut self, id: WatchId) {
        self.watches.entry(id).or_default();
    }

    pub(super) fn unregister(&mut self, id: &WatchId) {
        self.watches.remove(id);
    }

    fn publish(&mut self, id: &WatchId, store: &WatchStore) {
        self.watches.insert(
            id.clone(),
            Arc::new(Watched {
                objects: store.live.clone(),
                listed: store.listed,
            }),
        );
    }
}

/// One watch's objects as the watcher's events build them. A re-list collects into `relist` and
/// replaces `live` only when complete, so readers never see a partial list.
#[derive(Default)]
pub(super) struct WatchStore {
    live: BTreeMap<ObjectKey, Arc<Value>>,
    relist: Option<BTreeMap<ObjectKey, Arc<Value>>>,
    listed: bool,
}

impl WatchStore {
    /// Applies one watcher event; returns whether the published state changed.
    pub(super) fn apply(
        &mut self,
        event: Event<DynamicObject>,
        kind: &str,
        api_version: &str,
    ) -> bool {
        match event {
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                let (key, value) = entry(obj, kind, api_version);
                self.relist.get_or_insert_default().insert(key, value);
                false
            }
            Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                self.listed = true;
                true
            }
            Event::Apply(obj) => {
                let (key, value) = entry(obj, kind, api_version);
                self.live.insert(key, value);
                true
            }
            Event::Delete(obj) => {
                let (key, _) = entry(obj, kind, api_version);
                self.live.remove(&key).is_some()
            }
        }
    }

    pub(super) fn publish_to(&self, state: &mut ApiState, id: &WatchId) {
        state.publish(id, self);
    }
}

fn entry(mut obj: DynamicObject, kind: &str, api_version: &str) -> (ObjectKey, Arc<Value>) {
    let key = (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    );
    obj.types = Some(::kube::api::TypeMeta {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    });
    let value = serde_json::to_value(obj).unwrap_or(Value::Null);
    let value = if kind == "Pod" {
        super::pod_projection::project(&value)
    } else {
        value
    };
    (key, Arc::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, rv: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv},
            "spec": {"nodeName": "n1"}
        }))
        .unwrap()
    }

    fn names(state: &ApiState) -> Vec<String> {
        state
            .objects("Pod")
            .iter()
            .map(|v| v["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn relist_replaces_only_when_complete() {
        let id = WatchId {
            kind: "Pod".into(),
            fields: None,
        };
        let mut state = ApiState::default();
        state.register(id.clone());
        state.set_discovered();
        assert!(!state.synced());
        let mut store = WatchStore::default();
        let mut step = |e, state: &mut ApiState| {
            if store.apply(e, "Pod", "v1") {
                store.publish_to(state, &id);
            }
        };
        step(Event::Init, &mut state);
        step(Event::InitApply(pod("a", "1")), &mut state);
        step(Event::InitApply(pod("b", "2")), &mut state);
        assert!(!state.synced());
        step(Event::InitDone, &mut state);
        assert!(state.synced());
        assert_eq!(names(&state), ["a", "b"]);
        let a = state.objects("Pod")[0];
        assert_eq!(
            (a["kind"].as_str(), a["apiVersion"].as_str()),
            (Some("Pod"), Some("v1"))
        );

        step(Event::Init, &mut state);
        step(Event::InitApply(pod("c", "3")), &mut state);
        assert_eq!(names(&state), ["a", "b"], "old state kept during re-list");
        step(Event::InitDone, &mut state);
        assert_eq!(names(&state), ["c"]);
        step(Event::Apply(pod("d", "4")), &mut state);
        step(Event::Delete(pod("c", "5")), &mut state);
        assert_eq!(names(&state), ["d"]);
        assert!(state.synced());
    }
}
