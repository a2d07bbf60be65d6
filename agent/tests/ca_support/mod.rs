//! What the `sockmesh ca` tests share: a stand-in for the two Kubernetes API calls the CA makes
//! (TokenReview create, pods get/list), because no kube-apiserver can run here, and a running
//! `sockmesh ca` process over a fresh plug-in CA. The stand-in answers like kube-apiserver:
//! `status.user.username = system:serviceaccount:NS:SA`, pod-bound tokens carry the pod and node
//! names in `extra`, `status.audiences` is the intersection with the request's audiences (none:
//! unauthenticated), unknown tokens are unauthenticated; pods are filtered by `spec.nodeName`.
#![allow(dead_code)] // each test file uses a part

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// A service-account token the stand-in accepts.
#[derive(Clone, Debug)]
pub struct Token {
    pub namespace: String,
    pub service_account: String,
    /// (pod name, node name) for a pod-bound token.
    pub pod: Option<(String, String)>,
    pub audiences: Vec<String>,
}

impl Token {
    pub fn bound(ns: &str, sa: &str, pod: &str, node: &str) -> Token {
        Token {
            namespace: ns.into(),
            service_account: sa.into(),
            pod: Some((pod.into(), node.into())),
            audiences: vec!["istio-ca".into()],
        }
    }
}

/// A pod the stand-in lists: (namespace, name, service account, node).
pub type PodFixture = (&'static str, &'static str, &'static str, &'static str);

#[derive(Default)]
struct State {
    tokens: HashMap<String, Token>,
    pods: Vec<PodFixture>,
    reviews: usize,
}

pub struct StandInApi {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    state: Arc<Mutex<State>>,
    _thread: std::thread::JoinHandle<()>,
}

impl StandInApi {
    /// Serves on 127.0.0.1 of `netns` (a path such as /run/netns/X; `None`: this one) and writes
    /// `<dir>/kubeconfig` pointing at it.
    pub fn start(dir: &Path, netns: Option<&Path>, pods: Vec<PodFixture>) -> StandInApi {
        let state = Arc::new(Mutex::new(State {
            pods,
            ..State::default()
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let netns = netns.map(Path::to_path_buf);
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            if let Some(ns) = netns {
                let file = std::fs::File::open(&ns).unwrap();
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let state = served.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let state = state.clone();
                            async move { Ok::<_, Infallible>(answer(&state, req).await) }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster: {{server: \"http://{addr}\"}}\n\
                 users:\n- name: standin\n  user: {{}}\ncontexts:\n- name: standin\n  context: {{cluster: standin, user: standin}}\n\
                 current-context: standin\n"
            ),
        )
        .unwrap();
        StandInApi {
            addr,
            kubeconfig,
            state,
            _thread: thread,
        }
    }

    /// Registers `token` and returns its bearer value.
    pub fn issue_token(&self, token: Token) -> String {
        let mut state = self.state.lock().unwrap();
        let value = format!("standin-token-{}", state.tokens.len() + 1);
        state.tokens.insert(value.clone(), token);
        value
    }

    pub fn reviews(&self) -> usize {
        self.state.lock().unwrap().reviews
    }
}

async fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let post = req.method() == hyper::Method::POST;
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let body: Value = body
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let state = &mut *state.lock().unwrap();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (status, value) = match parts.as_slice() {
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] if post => {
            state.reviews += 1;
            (201, token_review(state, &body))
        }
        ["api", "v1", "namespaces", ns, "pods", name] => {
            match state.pods.iter().find(|p| p.0 == *ns && p.1 == *name) {
                Some(pod) => (200, pod_json(pod)),
                None => (404, not_found(&format!("pods \"{name}\" not found"))),
            }
        }
        ["api", "v1", "namespaces", ns, "pods"] => {
            let node = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "fieldSelector")
                .and_then(|(_, v)| v.strip_prefix("spec.nodeName=").map(str::to_string));
            let items: Vec<Value> = state
                .pods
                .iter()
                .filter(|p| p.0 == *ns && node.as_deref().is_none_or(|n| p.3 == n))
                .map(pod_json)
                .collect();
            let list = json!({"apiVersion": "v1", "kind": "PodList",
                "metadata": {"resourceVersion": "1"}, "items": items});
            (200, list)
        }
        _ => (404, not_found(&format!("no {path}"))),
    };
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn token_review(state: &State, review: &Value) -> Value {
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let asked: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let status = match state.tokens.get(token) {
        Some(t) => {
            let audiences: Vec<&String> =
                t.audiences.iter().filter(|a| asked.contains(a)).collect();
            if audiences.is_empty() {
                json!({"authenticated": false, "error": "token audiences are invalid"})
            } else {
                let mut extra = json!({});
                if let Some((pod, node)) = &t.pod {
                    extra = json!({"authentication.kubernetes.io/pod-name": [pod],
                        "authentication.kubernetes.io/node-name": [node]});
                }
                json!({"authenticated": true, "audiences": audiences, "user": {
                    "username": format!("system:serviceaccount:{}:{}", t.namespace, t.service_account),
                    "uid": "00000000-0000-0000-0000-000000000001",
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", t.namespace)],
                    "extra": extra}})
            }
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": review["spec"], "status": status})
}

fn pod_json(pod: &PodFixture) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": pod.0, "name": pod.1, "uid": format!("uid-{}-{}", pod.0, pod.1)},
        "spec": {"serviceAccountName": pod.2, "nodeName": pod.3, "containers": []},
        "status": {"phase": "Running"}})
}

fn not_found(message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
        "reason": "NotFound", "code": 404, "message": message})
}

/// A running `sockmesh ca`; killed on drop.
pub struct CaProcess {
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    netns: Option<String>,
    child: Child,
    log: PathBuf,
}

impl CaProcess {
    /// Starts `sockmesh ca` over `ca_dir` (`netns`: inside that network namespace), serving
    /// `127.0.0.1` and `localhost`, with `sockmesh-system/sockmesh-agent` (the default) as the node agent.
    pub fn start(
        ca_dir: &Path,
        api: &StandInApi,
        work: &Path,
        netns: Option<&str>,
        extra: &[&str],
    ) -> CaProcess {
        Self::start_on(free_port(), ca_dir, api, work, netns, extra)
    }

    /// [`CaProcess::start`] on a given gRPC port (a restarted CA at the same address).
    pub fn start_on(
        port: u16,
        ca_dir: &Path,
        api: &StandInApi,
        work: &Path,
        netns: Option<&str>,
        extra: &[&str],
    ) -> CaProcess {
        let metrics_port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
        let log = work.join(format!("ca-{port}.log"));
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_sockmesh")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_sockmesh")),
        };
        cmd.arg("ca")
            .arg("--ca-dir")
            .arg(ca_dir)
            .args(["--listen", &addr.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--server-name", "127.0.0.1,localhost"])
            .args(extra)
            .env("KUBECONFIG", &api.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("CA_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("starting sockmesh ca");
        let process = CaProcess {
            addr,
            metrics,
            netns: netns.map(str::to_string),
            child,
            log,
        };
        process.wait_for_log("serving Istio's CA API", Duration::from_secs(20));
        process
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the CA's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of the sample `name` (exact line prefix, labels included) in `/metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = match &self.netns {
            None => scrape(self.metrics),
            Some(ns) => {
                let out = Command::new("ip")
                    .args(["netns", "exec", ns, "curl", "-sf", "--max-time", "2"])
                    .arg(format!("http://{}/metrics", self.metrics))
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
        };
        metric_in(&text, name)
    }
}

impl Drop for CaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /metrics` over plain HTTP/1.0 (no client dependency).
pub fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

pub fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
