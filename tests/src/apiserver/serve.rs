//! The HTTP side: routes the Kubernetes REST paths to the store, streams watches, and answers
//! TokenReviews. Every request is recorded (verb, resource, caller's token) for the tests.
use std::{collections::HashMap, convert::Infallible, sync::Arc};

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{Method, Request, Response, body::Frame};
use serde_json::{Value, json};

use super::{
    ApiRequest, Shared,
    resources::{Resource, core_versions, group_list, resource_list},
    store::{Filter, Key, key_of},
};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// A resource path: `/api/v1/[namespaces/<ns>/]<plural>[/<name>]` or the same under
/// `/apis/<group>/<version>`.
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
}

fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] => (Some(*ns), {
            let mut r = vec![*plural];
            r.extend(rest);
            r
        }),
        _ => (None, rest.to_vec()),
    };
    let (plural, name) = match rest.as_slice() {
        [plural] => (*plural, None),
        [plural, name] => (*plural, Some(*name)),
        _ => return None,
    };
    Some(Target {
        group: group.to_owned(),
        version: version.to_owned(),
        plural: plural.to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
    })
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let token = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if shared.store().down {
        return status(503, "ServiceUnavailable", "apiserver is shutting down");
    }
    match path.as_str() {
        "/version" => {
            return json_response(
                200,
                &json!({"major": "1", "minor": "33",
                "gitVersion": "v1.33.0-sockmesh-testbed", "platform": "linux/amd64"}),
            );
        }
        "/api" => return json_response(200, &core_versions()),
        "/apis" => return json_response(200, &group_list(&shared.store().served)),
        _ => {}
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let discovery = match segs.as_slice() {
        ["api", v] => Some(("", *v)),
        ["apis", g, v] => Some((*g, *v)),
        _ => None,
    };
    if let Some((group, version)) = discovery {
        return match resource_list(&shared.store().served, group, version) {
            Some(doc) => json_response(200, &doc),
            None => not_found(&path),
        };
    }
    let Some(target) = parse_target(&path) else {
        return not_found(&path);
    };
    let verb = match (&parts.method, &target.name) {
        (&Method::GET, Some(_)) => "get",
        (&Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            "watch"
        }
        (&Method::GET, None) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => return status(405, "MethodNotAllowed", "method not allowed"),
    };
    shared.record(ApiRequest {
        verb: verb.to_owned(),
        group: target.group.clone(),
        version: target.version.clone(),
        resource: target.plural.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        token,
    });
    let Some(res) = shared
        .store()
        .served(&target.group, &target.version, &target.plural)
    else {
        return not_found(&path);
    };
    if res.kind == "TokenReview" {
        return match verb {
            "create" => token_review(&shared, &body),
            _ => status(405, "MethodNotAllowed", "tokenreviews only support create"),
        };
    }
    let filter = Filter {
        namespace: target.namespace.clone(),
        fields: query.get("fieldSelector").cloned().unwrap_or_default(),
        labels: query.get("labelSelector").cloned().unwrap_or_default(),
    };
    let key = |name: &str| -> Key {
        (
            target.namespace.clone().unwrap_or_default(),
            name.to_owned(),
        )
    };
    match verb {
        "get" => match shared
            .store()
            .get(&res, &key(target.name.as_deref().unwrap_or_default()))
        {
            Some(obj) => json_response(200, obj),
            None => object_not_found(&res, target.name.as_deref().unwrap_or_default()),
        },
        "list" => list(&shared, &res, &filter),
        "watch" => watch(&shared, res, filter, &query),
        "create" | "update" => write(&shared, &res, &target, &body, verb == "create"),
        "patch" => patch(
            &shared,
            &res,
            &key(target.name.as_deref().unwrap_or_default()),
            &body,
        ),
        _ => {
            let name = target.name.as_deref().unwrap_or_default();
            match shared.mutate(|s| s.delete(&res, &key(name))) {
                Some(obj) => json_response(200, &obj),
                None => object_not_found(&res, name),
            }
        }
    }
}

fn list(shared: &Shared, res: &Resource, filter: &Filter) -> Response<Body> {
    let mut store = shared.store();
    let rv = store.rv;
    let items: Vec<Value> = store
        .collection(res)
        .objects
        .values()
        .filter(|o| filter.matches(o))
        .cloned()
        .collect();
    json_response(
        200,
        &json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    )
}

fn write(
    shared: &Shared,
    res: &Resource,
    target: &Target,
    body: &[u8],
    create: bool,
) -> Response<Body> {
    let mut obj: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return status(400, "BadRequest", &format!("request body: {e}")),
    };
    if let Some(ns) = &target.namespace {
        obj["metadata"]["namespace"] = json!(ns);
    }
    let key = key_of(&obj);
    let exists = shared.store().get(res, &key).is_some();
    if create && exists {
        return status(
            409,
            "AlreadyExists",
            &format!("{} \"{}\" already exists", res.plural, key.1),
        );
    }
    if !create && !exists {
        return object_not_found(res, &key.1);
    }
    let stored = shared.mutate(|s| s.put(res, obj, false));
    json_response(if create { 201 } else { 200 }, &stored)
}

/// JSON merge patch (RFC 7386), what `kubectl patch --type merge` sends.
fn patch(shared: &Shared, res: &Resource, key: &Key, body: &[u8]) -> Response<Body> {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "patch body is not JSON");
    };
    let Some(mut obj) = shared.store().get(res, key).cloned() else {
        return object_not_found(res, &key.1);
    };
    merge(&mut obj, &patch);
    let stored = shared.mutate(|s| s.put(res, obj, false));
    json_response(200, &stored)
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn token_review(shared: &Shared, body: &[u8]) -> Response<Body> {
    let Ok(review) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "TokenReview body is not JSON");
    };
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let status_body = match shared.tokens().get(token) {
        Some(t) => {
            // No audiences asked: the API server's own audience, which every token here carries.
            let audiences: Vec<&String> = if wanted.is_empty() {
                t.audiences.iter().collect()
            } else {
                wanted.iter().filter(|a| t.audiences.contains(a)).collect()
            };
            if audiences.is_empty() {
                json!({"authenticated": false, "error": "token audiences do not match"})
            } else {
                let mut extra = serde_json::Map::new();
                if let Some((pod, node)) = &t.pod {
                    extra.insert("authentication.kubernetes.io/pod-name".into(), json!([pod]));
                    extra.insert(
                        "authentication.kubernetes.io/node-name".into(),
                        json!([node]),
                    );
                }
                json!({"authenticated": true, "audiences": audiences, "user": {
                    "username": format!("system:serviceaccount:{}:{}", t.namespace, t.service_account),
                    "uid": format!("sa-uid-{}-{}", t.namespace, t.service_account),
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", t.namespace),
                               "system:authenticated"],
                    "extra": extra}})
            }
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    let mut out = review.clone();
    out["status"] = status_body;
    json_response(201, &out)
}

/// A watch from `resourceVersion` (default: now): the log's later changes that pass the filter,
/// bookmarks if asked, `410 Gone` when the version was compacted away; ends when the server
/// ends its streams (outage, [`super::ApiServer::drop_streams`]).
fn watch(
    shared: &Arc<Shared>,
    res: Resource,
    filter: Filter,
    query: &HashMap<String, String>,
) -> Response<Body> {
    let (from, generation) = {
        let store = shared.store();
        let from = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .filter(|&v| v > 0)
            .unwrap_or(store.rv);
        (from, store.generation)
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let state = (shared.clone(), shared.changes.subscribe(), from, false);
    let lines = futures::stream::unfold(state, move |(me, mut changed, mut last, done)| {
        let (res, filter) = (res.clone(), filter.clone());
        async move {
            if done {
                return None;
            }
            loop {
                changed.borrow_and_update();
                {
                    let mut store = me.store();
                    if store.generation != generation || store.down {
                        return None;
                    }
                    if last < store.floor {
                        let gone = json!({"type": "ERROR", "object": {
                            "kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "reason": "Expired", "code": 410,
                            "message": format!("too old resource version: {last} ({})", store.floor)}});
                        return Some((line(&gone), (me.clone(), changed, last, true)));
                    }
                    let log = &store.collection(&res).log;
                    let start = log.partition_point(|c| c.rv <= last);
                    let next = log[start..].iter().find(|c| {
                        if c.kind == "BOOKMARK" {
                            bookmarks
                        } else {
                            filter.matches(&c.object)
                        }
                    });
                    if let Some(c) = next {
                        let out = line(&json!({"type": c.kind, "object": c.object}));
                        last = c.rv;
                        drop(store);
                        return Some((out, (me, changed, last, false)));
                    }
                    last = last.max(log.last().map_or(last, |c| c.rv));
                }
                if changed.changed().await.is_err() {
                    return None;
                }
            }
        }
    });
    let body = StreamBody::new(lines.map(|b| Ok::<_, Infallible>(Frame::data(b))));
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(http_body_util::BodyExt::boxed(body))
        .expect("static response parts")
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .expect("static response parts")
}

pub(crate) fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code}),
    )
}

fn not_found(path: &str) -> Response<Body> {
    status(
        404,
        "NotFound",
        &format!("the server could not find the requested resource ({path})"),
    )
}

fn object_not_found(res: &Resource, name: &str) -> Response<Body> {
    status(
        404,
        "NotFound",
        &format!("{} \"{name}\" not found", res.plural),
    )
}
