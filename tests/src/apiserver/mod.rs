//! A small, real Kubernetes API server for the test bed: no kube-apiserver can run on the
//! development machines, so agents in `--kubernetes` mode talk to this one over HTTP on loopback.
//!
//! It speaks the protocol the agent, `sockmesh ca` and kube-rs use: discovery (`/api`, `/apis`,
//! group versions, so CRD groups can appear later), list/get with field and label selectors,
//! `watch=true` streams with resource versions, bookmarks and `410 Gone`, create, replace, merge
//! patch, delete, and TokenReview. It does not authorize: it records every request instead, so a
//! test can compare what a component really calls with the RBAC it is granted.
mod resources;
mod serve;
mod store;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    thread,
};

use anyhow::{Context as _, Result, anyhow, bail};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::{oneshot, watch};

use store::{Store, key_of};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// `get`, `list`, `watch`, `create`, `update`, `patch` or `delete`.
    pub verb: String,
    /// Empty for the core group.
    pub group: String,
    pub version: String,
    /// Plural resource name (`pods`).
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub query: String,
    /// The bearer token the caller sent.
    pub token: Option<String>,
}

/// A service-account token the server's TokenReview accepts.
#[derive(Debug, Clone, Default)]
pub struct ServiceAccountToken {
    pub namespace: String,
    pub service_account: String,
    /// `(pod name, node name)`: the claims of a pod-bound (projected) token.
    pub pod: Option<(String, String)>,
    pub audiences: Vec<String>,
}

pub(crate) struct Shared {
    store: Mutex<Store>,
    changes: watch::Sender<u64>,
    tokens: Mutex<HashMap<String, ServiceAccountToken>>,
    requests: Mutex<Vec<ApiRequest>>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<String, ServiceAccountToken>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, request: ApiRequest) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request);
    }

    /// Changes the store and wakes every watch stream.
    fn mutate<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let out = f(&mut self.store());
        self.changes.send_modify(|g| *g += 1);
        out
    }
}

/// The running server; stops when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    kubeconfig: PathBuf,
    admin_token: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ApiServer {
    /// Starts the server on a free loopback port and writes `<workdir>/kubeconfig` for it.
    pub fn start(workdir: &Path) -> Result<ApiServer> {
        Self::start_in(workdir, None)
    }

    /// [`ApiServer::start`] on the loopback of the network namespace at `netns` (a process in
    /// that namespace reaches it at the kubeconfig's address).
    pub fn start_in(workdir: &Path, netns: Option<&Path>) -> Result<ApiServer> {
        let shared = Arc::new(Shared {
            store: Mutex::default(),
            changes: watch::channel(0).0,
            tokens: Mutex::default(),
            requests: Mutex::default(),
        });
        let (stop, stopped) = oneshot::channel();
        let (bound_tx, bound) = std::sync::mpsc::channel();
        let serving = shared.clone();
        let netns = netns.map(Path::to_path_buf);
        let thread = thread::Builder::new()
            .name("apiserver".into())
            .spawn(move || {
                let listener = bind(netns.as_deref());
                let listener = match listener {
                    Ok(l) => {
                        let _ = bound_tx.send(l.local_addr().map_err(anyhow::Error::from));
                        l
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(e));
                        return;
                    }
                };
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("API server runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("API server listener");
                    tokio::select! {
                        () = accept(listener, serving) => {}
                        _ = stopped => {}
                    }
                });
                runtime.shutdown_background();
            })?;
        let addr = bound
            .recv()
            .context("API server thread ended before binding")??;
        let admin_token = "testbed-admin".to_owned();
        let kubeconfig = workdir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_text(addr, &admin_token))
            .with_context(|| format!("write {}", kubeconfig.display()))?;
        Ok(ApiServer {
            shared,
            addr,
            kubeconfig,
            admin_token,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig for this server (give it as `KUBECONFIG`); its token is the bed's admin one.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The bearer token of [`ApiServer::kubeconfig`], to tell the bed's own requests apart.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Creates or replaces every object of a multi-document YAML (or JSON) text.
    pub fn apply(&self, text: &str) -> Result<()> {
        for obj in crate::yaml::documents(text).context("manifest is not valid YAML")? {
            self.put(obj, false)?;
        }
        Ok(())
    }

    /// Creates or replaces one object.
    pub fn apply_object(&self, obj: Value) -> Result<()> {
        self.put(obj, false)
    }

    /// Changes an object without telling open watches, as when the change was compacted away
    /// before a reconnecting client saw it; only a re-list shows it.
    pub fn apply_unseen(&self, obj: Value) -> Result<()> {
        self.put(obj, true)
    }

    fn put(&self, obj: Value, silently: bool) -> Result<()> {
        let (api_version, kind) = (
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
        );
        let res = Store::resource_of(api_version, kind)
            .ok_or_else(|| anyhow!("no such kind {api_version}/{kind}"))?;
        if key_of(&obj).1.is_empty() {
            bail!("{kind} without metadata.name");
        }
        self.shared.mutate(|s| s.put(&res, obj, silently));
        Ok(())
    }

    /// Deletes an object; watches see `DELETED`. Deleting an absent object is not an error.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Result<()> {
        let res = Store::resource_of(api_version, kind)
            .ok_or_else(|| anyhow!("no such kind {api_version}/{kind}"))?;
        let ns = if res.namespaced { namespace } else { "" };
        self.shared
            .mutate(|s| s.delete(&res, &(ns.to_owned(), name.to_owned())));
        Ok(())
    }

    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = Store::resource_of(api_version, kind)?;
        let ns = if res.namespaced { namespace } else { "" };
        self.shared
            .store()
            .get(&res, &(ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every stored object of a kind.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let Some(res) = Store::resource_of(api_version, kind) else {
            return Vec::new();
        };
        self.shared
            .store()
            .collection(&res)
            .objects
            .values()
            .cloned()
            .collect()
    }

    /// Installs Istio's CRDs: their groups appear in discovery and their objects are served.
    pub fn install_istio_crds(&self) {
        self.shared.mutate(Store::install_istio);
    }

    /// Installs Istio's pre-1.6 `MeshPolicy` and `Policy` CRDs.
    pub fn install_legacy_istio_crds(&self) {
        self.shared.mutate(Store::install_legacy_istio);
    }

    /// An outage: new connections are closed at once, requests in flight get 503, and open
    /// watch streams end. `false` brings the server back with the state it had.
    pub fn set_down(&self, down: bool) {
        self.shared.mutate(|s| {
            s.down = down;
            s.generation += 1;
        });
    }

    /// Ends every open watch stream without an event, as a restarting apiserver does.
    pub fn drop_streams(&self) {
        self.shared.mutate(|s| s.generation += 1);
    }

    /// Compacts history: open watches get `410 Gone` and must re-list.
    pub fn expire(&self) {
        self.shared.mutate(|s| {
            s.rv += 1;
            s.floor = s.rv;
        });
    }

    /// A `BOOKMARK` with the current resource version for the watches of a kind.
    pub fn bookmark(&self, api_version: &str, kind: &str) -> Result<()> {
        let res = Store::resource_of(api_version, kind)
            .ok_or_else(|| anyhow!("no such kind {api_version}/{kind}"))?;
        self.shared.mutate(|s| s.bookmark(&res));
        Ok(())
    }

    /// Registers a token that TokenReview will accept, and returns it.
    pub fn issue_token(&self, token: ServiceAccountToken) -> String {
        let mut tokens = self.shared.tokens();
        let value = format!(
            "testbed-token-{}-{}-{}",
            token.namespace,
            token.service_account,
            tokens.len()
        );
        tokens.insert(value.clone(), token);
        value
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if shared.store().down {
            continue; // closed unanswered: the client sees the connection reset
        }
        let s = shared.clone();
        let svc = service_fn(move |req| {
            let s = s.clone();
            async move { Ok::<_, std::convert::Infallible>(serve::handle(s, req).await) }
        });
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
    }
}

/// A non-blocking listener on a free loopback port, in `netns` when given (the calling thread
/// joins it: the server's own thread).
fn bind(netns: Option<&Path>) -> Result<std::net::TcpListener> {
    if let Some(ns) = netns {
        let file = std::fs::File::open(ns).with_context(|| format!("open {}", ns.display()))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("setns {}", ns.display()))?;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind API server")?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn kubeconfig_text(addr: SocketAddr, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster:\n    server: http://{addr}\n\
         users:\n- name: testbed\n  user:\n    token: {token}\ncontexts:\n- name: testbed\n  context:\n    \
         cluster: testbed\n    user: testbed\ncurrent-context: testbed\n"
    )
}
