//! A stand-in for kube-apiserver over HTTP on 127.0.0.1: serves recorded discovery documents and
//! list responses (fixtures in the real API's JSON), and watch streams of newline-delimited
//! `{"type":..,"object":..}` events with resource versions, bookmarks, `410 Gone` (`Expired`)
//! and dropped connections, the way the real server does. Only what the agent's requests use.
use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch};

type Body = BoxBody<Bytes, Infallible>;

/// One resource collection (`/api/v1/pods`): current objects and the change log watches replay.
struct Collection {
    kind: String,
    api_version: String,
    objects: BTreeMap<(String, String), Value>,
    log: Vec<(u64, &'static str, Value)>,
}

struct Inner {
    documents: HashMap<String, Value>,
    collections: HashMap<String, Collection>,
    rv: u64,
    /// Watches from before this resource version get `410 Gone`.
    floor: u64,
    /// Bumped to end every open watch stream.
    generation: u64,
    down: bool,
    requests: Vec<String>,
}

#[derive(Clone)]
pub struct Replay {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<watch::Sender<u64>>,
    pub addr: SocketAddr,
}

fn fixture(dir: &Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn key(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (s(&m["namespace"]), s(&m["name"]))
}

impl Replay {
    /// Serves `fixtures`: `apis.json`, `<group>_<version>.json` and one `<plural>.json` list per
    /// collection in `collections` (`(url path, fixture)`).
    pub async fn start(fixtures: &Path, collections: &[(&str, &str)]) -> Replay {
        let mut documents = HashMap::new();
        documents.insert("/apis".to_owned(), fixture(fixtures, "apis.json"));
        for group in ["security.istio.io", "networking.istio.io"] {
            let doc = fixture(fixtures, &format!("{group}_v1.json"));
            documents.insert(format!("/apis/{group}/v1"), doc);
        }
        let mut rv = 0;
        let mut colls = HashMap::new();
        for (path, file) in collections {
            let list = fixture(fixtures, file);
            let kind = list["kind"].as_str().unwrap().trim_end_matches("List");
            let mut objects = BTreeMap::new();
            for item in list["items"].as_array().unwrap() {
                let item_rv: u64 = item["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                rv = rv.max(item_rv);
                objects.insert(key(item), item.clone());
            }
            rv = rv.max(
                list["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
            );
            let api_version = list["apiVersion"].as_str().unwrap().to_owned();
            colls.insert(
                path.to_string(),
                Collection {
                    kind: kind.to_owned(),
                    api_version,
                    objects,
                    log: Vec::new(),
                },
            );
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let replay = Replay {
            inner: Arc::new(Mutex::new(Inner {
                documents,
                collections: colls,
                rv,
                floor: 0,
                generation: 0,
                down: false,
                requests: Vec::new(),
            })),
            changed: Arc::new(watch::channel(0).0),
            addr: listener.local_addr().unwrap(),
        };
        let server = replay.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if server.lock().down {
                    continue; // dropped: the client sees a reset connection
                }
                let s = server.clone();
                let svc = service_fn(move |req| {
                    let s = s.clone();
                    async move { Ok::<_, Infallible>(s.handle(req)) }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
            }
        });
        replay
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    fn mutate(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut self.lock());
        self.changed.send_modify(|g| *g += 1);
    }

    /// Creates or updates an object; watches see `ADDED` or `MODIFIED` unless `silently`, which
    /// models an event the watch missed (compacted away).
    fn put(&self, path: &str, mut obj: Value, silently: bool) {
        self.mutate(|i| {
            i.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(i.rv.to_string());
            let c = i.collections.get_mut(path).unwrap();
            let kind = if c.objects.insert(key(&obj), obj.clone()).is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            if !silently {
                c.log.push((i.rv, kind, obj));
            }
        });
    }

    pub fn apply(&self, path: &str, obj: Value) {
        self.put(path, obj, false);
    }

    pub fn apply_unseen(&self, path: &str, obj: Value) {
        self.put(path, obj, true);
    }

    pub fn delete(&self, path: &str, namespace: &str, name: &str) {
        self.mutate(|i| {
            i.rv += 1;
            let c = i.collections.get_mut(path).unwrap();
            let mut obj = c
                .objects
                .remove(&(namespace.to_owned(), name.to_owned()))
                .unwrap();
            obj["metadata"]["resourceVersion"] = json!(i.rv.to_string());
            c.log.push((i.rv, "DELETED", obj));
        });
    }

    /// A `BOOKMARK` carrying the current resource version to every watch of `path`.
    pub fn bookmark(&self, path: &str) {
        self.mutate(|i| {
            i.rv += 1;
            let rv = i.rv;
            let c = i.collections.get_mut(path).unwrap();
            let obj = json!({"kind": c.kind, "apiVersion": c.api_version,
                             "metadata": {"resourceVersion": rv.to_string()}});
            c.log.push((rv, "BOOKMARK", obj));
        });
    }

    /// Compacts history: open watches get a `410 Gone` ERROR event, and so does any watch that
    /// resumes from an older resource version; clients must re-list.
    pub fn expire(&self) {
        self.mutate(|i| {
            i.rv += 1;
            i.floor = i.rv;
        });
    }

    /// Ends every open watch stream without an event, as a restarting apiserver or a proxy does.
    pub fn drop_streams(&self) {
        self.mutate(|i| i.generation += 1);
    }

    /// An outage: new connections are dropped, requests get 503 and open watches end.
    pub fn set_down(&self, down: bool) {
        self.mutate(|i| {
            i.down = down;
            i.generation += 1;
        });
    }

    /// Every request so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let query: HashMap<String, String> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect();
        let mut inner = self.lock();
        inner.requests.push(req.uri().to_string());
        if inner.down {
            return status(503, "ServiceUnavailable", "apiserver is shutting down");
        }
        if let Some(doc) = inner.documents.get(&path) {
            return json_response(200, doc);
        }
        let Some(c) = inner.collections.get(&path) else {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        };
        let selector = query.get("fieldSelector").cloned().unwrap_or_default();
        if query.get("watch").map(String::as_str) != Some("true") {
            let items: Vec<&Value> = c
                .objects
                .values()
                .filter(|o| matches(o, &selector))
                .collect();
            let list = json!({"kind": format!("{}List", c.kind), "apiVersion": c.api_version,
                              "metadata": {"resourceVersion": inner.rv.to_string()},
                              "items": items});
            return json_response(200, &list);
        }
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(inner.rv);
        let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
        let generation = inner.generation;
        drop(inner);
        self.watch_stream(path, selector, from, bookmarks, generation)
    }

    fn watch_stream(
        &self,
        path: String,
        selector: String,
        from: u64,
        bookmarks: bool,
        generation: u64,
    ) -> Response<Body> {
        let state = (self.clone(), self.changed.subscribe(), from, false);
        let lines = futures::stream::unfold(state, move |(me, mut changed, mut last, done)| {
            let (path, selector) = (path.clone(), selector.clone());
            async move {
                if done {
                    return None;
                }
                loop {
                    changed.borrow_and_update();
                    {
                        let inner = me.lock();
                        if inner.generation != generation {
                            return None;
                        }
                        if last < inner.floor {
                            let gone = json!({"type": "ERROR", "object": {
                                "kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Failure", "reason": "Expired", "code": 410,
                                "message": format!("too old resource version: {last} ({})", inner.floor)}});
                            return Some((line(&gone), (me.clone(), changed, last, true)));
                        }
                        let c = &inner.collections[&path];
                        let next = c.log.iter().find(|(rv, kind, obj)| {
                            *rv > last
                                && if *kind == "BOOKMARK" {
                                    bookmarks
                                } else {
                                    matches(obj, &selector)
                                }
                        });
                        if let Some((rv, kind, obj)) = next {
                            let event = json!({"type": kind, "object": obj});
                            let out = line(&event);
                            last = *rv;
                            drop(inner);
                            return Some((out, (me, changed, last, false)));
                        }
                        // Nothing for this watch up to here: skip what it does not select.
                        last = last.max(c.log.last().map_or(last, |e| e.0));
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
            .unwrap()
    }
}

fn line(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// `a.b=c[,d.e=f]` against the object's fields, as the apiserver's field selectors do.
fn matches(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let Some((field, want)) = term.split_once('=') else {
            return false;
        };
        let pointer = format!("/{}", field.replace('.', "/"));
        obj.pointer(&pointer).and_then(Value::as_str) == Some(want)
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": message, "reason": reason, "code": code});
    json_response(code, &s)
}
