//! `--kubernetes`: the API server as the configuration source. One `kube` watcher per kind keeps
//! an [`ApiState`]; the watcher re-lists after `410 Gone` and resumes after dropped streams, and
//! errors (an API outage) only delay the next attempt: the last known objects stay published.
//! The Istio kinds are rediscovered every few seconds, so installing Istio's CRDs after the agent
//! starts enforces its policies without a restart.
use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use ::kube::{
    Client,
    api::{Api, ApiResource, DynamicObject, GroupVersionKind},
    discovery::Discovery,
    runtime::watcher,
};
use futures::StreamExt as _;
use serde_json::Value;
use tokio::{sync::watch, task::AbortHandle};
use tracing::{info, warn};

use super::api_state::{ApiState, WatchId, WatchStore};

/// Istio kinds, watched only when the cluster serves them (a missing CRD is not an error).
const ISTIO_KINDS: [(&str, &str); 6] = [
    ("security.istio.io", "PeerAuthentication"),
    ("security.istio.io", "AuthorizationPolicy"),
    ("networking.istio.io", "DestinationRule"),
    ("networking.istio.io", "ServiceEntry"),
    ("authentication.istio.io", "MeshPolicy"),
    ("authentication.istio.io", "Policy"),
];

/// How long to wait before retrying after an API error, doubling up to `max`; and how often to
/// ask the API again which Istio kinds it serves, so CRDs installed after the agent are watched
/// within seconds, without a restart.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    pub rediscover: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(30),
            rediscover: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    pub(super) fn next(&self, current: Duration) -> Duration {
        (current * 2).min(self.max)
    }
}

/// Starts watching the API: the objects of the whole cluster (every node's pods are *known*; the
/// caller enrolls only its own node's). The returned receiver always holds the latest state;
/// every watch stops once all receivers are dropped.
pub fn start(client: Client, backoff: Backoff) -> watch::Receiver<ApiState> {
    let (tx, rx) = watch::channel(ApiState::default());
    tokio::spawn(async move {
        let mut tasks = Tasks::default();
        tokio::select! {
            () = supervise(&client, backoff, &tx, &mut tasks) => {}
            () = tx.closed() => {}
        }
        tasks.abort_all();
    });
    rx
}

#[derive(Default)]
struct Tasks(HashMap<WatchId, AbortHandle>);

impl Tasks {
    fn abort_all(&mut self) {
        self.0.drain().for_each(|(_, t)| t.abort());
    }

    fn stop(&mut self, id: &WatchId, tx: &watch::Sender<ApiState>) {
        if let Some(t) = self.0.remove(id) {
            t.abort();
        }
        tx.send_modify(|s| s.unregister(id));
    }
}

async fn supervise(
    client: &Client,
    backoff: Backoff,
    tx: &watch::Sender<ApiState>,
    tasks: &mut Tasks,
) {
    for (kind, plural) in [
        ("Pod", "pods"),
        ("Namespace", "namespaces"),
        ("Service", "services"),
    ] {
        spawn_watch(
            client,
            core_resource(kind, plural),
            None,
            backoff,
            tx,
            tasks,
        );
    }
    let mut delay = backoff.min;
    let served = loop {
        match discover(client).await {
            Ok(found) => break found,
            Err(e) => {
                warn!(error = %e, "API discovery failed; retrying");
                tokio::time::sleep(delay).await;
                delay = backoff.next(delay);
            }
        }
    };
    follow_istio_kinds(client, backoff, tx, tasks, served);
    tx.send_modify(ApiState::set_discovered);
    let mut changes = tx.subscribe();
    let mut rediscover = tokio::time::interval(backoff.rediscover);
    rediscover.tick().await;
    loop {
        // Computed first: the borrow must end before the watches change the state.
        let wanted = credential_selectors(&changes.borrow_and_update());
        follow_credentials(client, backoff, wanted, tx, tasks);
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = rediscover.tick() => match discover(client).await {
                Ok(served) => follow_istio_kinds(client, backoff, tx, tasks, served),
                Err(e) => warn!(error = %e, "API rediscovery failed; keeping the Istio kinds watched"),
            },
        }
    }
}

/// Which Istio kinds the cluster serves now.
async fn discover(client: &Client) -> Result<Vec<ApiResource>, ::kube::Error> {
    let groups: BTreeSet<&str> = ISTIO_KINDS.iter().map(|(g, _)| *g).collect();
    let groups: Vec<&str> = groups.into_iter().collect();
    let d = Discovery::new(client.clone()).filter(&groups).run().await?;
    Ok(ISTIO_KINDS
        .iter()
        .filter_map(|(g, k)| d.get(g)?.recommended_kind(k).map(|(ar, _)| ar))
        .collect())
}

/// Starts a watch for every served Istio kind not yet watched, and stops the watches of kinds
/// no longer served (a deleted CRD takes its objects with it, as in the API).
fn follow_istio_kinds(
    client: &Client,
    backoff: Backoff,
    tx: &watch::Sender<ApiState>,
    tasks: &mut Tasks,
    served: Vec<ApiResource>,
) {
    let wanted: BTreeSet<WatchId> = served.iter().map(|ar| watch_id(ar, None)).collect();
    let istio = |id: &WatchId| ISTIO_KINDS.iter().any(|(_, k)| *k == id.kind);
    let gone: Vec<WatchId> = tasks
        .0
        .keys()
        .filter(|id| istio(id) && !wanted.contains(id))
        .cloned()
        .collect();
    for id in gone {
        info!(kind = %id.kind, "Istio kind no longer served; its watch stops");
        tasks.stop(&id, tx);
    }
    for ar in served {
        if !tasks.0.contains_key(&watch_id(&ar, None)) {
            info!(kind = %ar.kind, version = %ar.api_version, "Istio kind served; watching it");
            spawn_watch(client, ar, None, backoff, tx, tasks);
        }
    }
}

fn core_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", kind), plural)
}

fn watch_id(ar: &ApiResource, fields: Option<String>) -> WatchId {
    WatchId {
        kind: ar.kind.clone(),
        fields,
    }
}

fn spawn_watch(
    client: &Client,
    ar: ApiResource,
    fields: Option<String>,
    backoff: Backoff,
    tx: &watch::Sender<ApiState>,
    tasks: &mut Tasks,
) {
    let id = watch_id(&ar, fields.clone());
    tx.send_modify(|s| s.register(id.clone()));
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut config = watcher::Config::default();
    if let Some(f) = &fields {
        config = config.fields(f);
    }
    let (tx, task_id) = (tx.clone(), id.clone());
    let task = tokio::spawn(async move {
        let mut events = watcher(api, config).boxed();
        let mut store = WatchStore::default();
        let mut delay = backoff.min;
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => {
                    delay = backoff.min;
                    if store.apply(e, &ar.kind, &ar.api_version) {
                        tx.send_modify(|s| store.publish_to(s, &task_id));
                    }
                }
                Err(e) => {
                    warn!(kind = %ar.kind, error = %e, "watch failed; keeping the last known state");
                    tokio::time::sleep(delay).await;
                    delay = backoff.next(delay);
                }
            }
        }
    });
    tasks.0.insert(id, task.abort_handle());
}

/// Keeps one Secret watch per name that a DestinationRule's `credentialName` refers to (and its
/// `<name>-cacert` companion), so the agent never needs to read every Secret in the cluster.
fn follow_credentials(
    client: &Client,
    backoff: Backoff,
    wanted: BTreeSet<String>,
    tx: &watch::Sender<ApiState>,
    tasks: &mut Tasks,
) {
    let secrets = core_resource("Secret", "secrets");
    let stale: Vec<WatchId> = tasks
        .0
        .keys()
        .filter(|id| id.kind == "Secret")
        .filter(|id| id.fields.as_ref().is_none_or(|f| !wanted.contains(f)))
        .cloned()
        .collect();
    for id in stale {
        tasks.stop(&id, tx);
    }
    for fields in wanted {
        let id = watch_id(&secrets, Some(fields.clone()));
        if !tasks.0.contains_key(&id) {
            spawn_watch(client, secrets.clone(), Some(fields), backoff, tx, tasks);
        }
    }
}

/// The field selectors of the Secrets the DestinationRules name.
fn credential_selectors(state: &ApiState) -> BTreeSet<String> {
    state
        .objects("DestinationRule")
        .into_iter()
        .flat_map(|dr| credential_names(&dr["spec"]))
        .flat_map(|n| [format!("{n}-cacert"), n])
        .map(|n| format!("metadata.name={n}"))
        .collect()
}

/// Every `credentialName` anywhere in a DestinationRule spec (traffic policy, port-level
/// settings, subsets).
fn credential_names(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![spec];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(n)) = map.get("credentialName") {
                    out.push(n.clone());
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_names_anywhere_in_the_spec() {
        let spec = serde_json::json!({
            "host": "a",
            "trafficPolicy": {
                "tls": {"mode": "MUTUAL", "credentialName": "top"},
                "portLevelSettings": [{"port": {"number": 443}, "tls": {"credentialName": "port"}}]
            },
            "subsets": [{"name": "v1", "trafficPolicy": {"tls": {"credentialName": "subset"}}}]
        });
        let mut names = credential_names(&spec);
        names.sort();
        assert_eq!(names, ["port", "subset", "top"]);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(300),
            rediscover: Duration::from_secs(1),
        };
        assert_eq!(b.next(b.min), Duration::from_millis(200));
        assert_eq!(
            b.next(Duration::from_millis(200)),
            Duration::from_millis(300)
        );
    }
}
