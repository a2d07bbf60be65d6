//! What the `sockmesh ca` tests share: the test bed's Kubernetes API server (no kube-apiserver can
//! run here) holding the pods the CA looks up and answering its TokenReviews, and a running
//! `sockmesh ca` process over a fresh plug-in CA.
#![allow(dead_code)] // each test file uses a part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
pub use testbed::{ApiServer, ServiceAccountToken as Token};

/// A pod the API holds: (namespace, name, service account, node).
pub type PodFixture = (&'static str, &'static str, &'static str, &'static str);

/// A pod-bound token (audience `istio-ca`) of `ns/sa`, for `pod` on `node`.
pub fn bound(ns: &str, sa: &str, pod: &str, node: &str) -> Token {
    Token {
        namespace: ns.into(),
        service_account: sa.into(),
        pod: Some((pod.into(), node.into())),
        audiences: vec!["istio-ca".into()],
    }
}

/// The bed's API server on 127.0.0.1 of `netns` (a path such as /run/netns/X; `None`: this
/// one), holding `pods` as Running pods; its kubeconfig is `<dir>/kubeconfig`.
pub fn api(dir: &Path, netns: Option<&Path>, pods: Vec<PodFixture>) -> ApiServer {
    let api = ApiServer::start_in(dir, netns).unwrap();
    for (ns, name, sa, node) in pods {
        api.apply_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{ns}-{name}")},
            "spec": {"serviceAccountName": sa, "nodeName": node, "containers": []},
            "status": {"phase": "Running"}}))
            .unwrap();
    }
    api
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
        api: &ApiServer,
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
        api: &ApiServer,
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
            .env("KUBECONFIG", api.kubeconfig())
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
