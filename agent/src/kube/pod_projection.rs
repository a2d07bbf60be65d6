//! Pods of the whole cluster are kept, so each is cut down to what the resolver and the enroller
//! read before it is stored: at 10,000 pods the full objects (managed fields, container specs,
//! conditions) would be most of the agent's memory.
use serde_json::{Map, Value};

/// Fields kept, as JSON pointers into the Pod object.
const KEPT: &[&str] = &[
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/uid",
    "/metadata/resourceVersion",
    "/metadata/labels",
    "/metadata/annotations",
    "/metadata/ownerReferences",
    "/spec/nodeName",
    "/spec/serviceAccountName",
    "/spec/serviceAccount",
    "/spec/hostNetwork",
    "/status/phase",
    "/status/qosClass",
    "/status/podIP",
    "/status/podIPs",
];

/// The Pod with only [`KEPT`] fields and each container's name and ports.
pub fn project(pod: &Value) -> Value {
    let mut out = Value::Object(Map::new());
    for pointer in KEPT {
        if let Some(v) = pod.pointer(pointer) {
            set(&mut out, pointer, v.clone());
        }
    }
    if let Some(containers) = pod.pointer("/spec/containers").and_then(Value::as_array) {
        let slim: Vec<Value> = containers
            .iter()
            .map(|c| {
                let mut m = Map::new();
                for field in ["name", "ports"] {
                    if let Some(v) = c.get(field) {
                        m.insert(field.to_owned(), v.clone());
                    }
                }
                Value::Object(m)
            })
            .collect();
        set(&mut out, "/spec/containers", Value::Array(slim));
    }
    out
}

fn set(root: &mut Value, pointer: &str, value: Value) {
    let mut cur = root;
    let mut parts = pointer.trim_start_matches('/').split('/').peekable();
    while let Some(part) = parts.next() {
        let map = match cur {
            Value::Object(m) => m,
            _ => return,
        };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        cur = map
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_what_the_resolver_reads_and_drops_the_rest() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u", "labels": {"app": "a"},
                         "managedFields": [{"manager": "kubectl"}],
                         "ownerReferences": [{"kind": "ReplicaSet", "name": "a-1"}]},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa", "volumes": [{"name": "v"}],
                     "containers": [{"name": "c", "image": "i", "env": [{"name": "X"}],
                                     "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready"}]}
        });
        let slim = project(&pod);
        assert_eq!(
            slim,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "a", "namespace": "ns", "uid": "u", "labels": {"app": "a"},
                             "ownerReferences": [{"kind": "ReplicaSet", "name": "a-1"}]},
                "spec": {"nodeName": "n1", "serviceAccountName": "sa",
                         "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
                "status": {"phase": "Running", "podIP": "10.0.0.1"}
            })
        );
    }
}
