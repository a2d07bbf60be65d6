//! The API source against the test bed's API server (`testbed::ApiServer`: no real apiserver can
//! run here), seeded with list responses recorded from kube-apiserver: first list and sync, live
//! events and bookmarks, credential Secrets following DestinationRules, a dropped stream resumed
//! from its resource version, `410 Gone` forcing a re-list, an outage during which the last known
//! state stays published, and Istio CRDs installed after the agent started.
use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use sockmesh_agent::kube::{
    api_source::{self, Backoff},
    api_state::ApiState,
};
use testbed::ApiServer;
use tokio::sync::watch;

/// Recorded list responses (`kubectl get --raw`), loaded into the server.
const FIXTURES: [&str; 7] = [
    "pods.json",
    "namespaces.json",
    "services.json",
    "secrets.json",
    "destinationrules.json",
    "serviceentries.json",
    "peerauthentications.json",
];

const BACKOFF: Backoff = Backoff {
    min: Duration::from_millis(20),
    max: Duration::from_millis(200),
    rediscover: Duration::from_millis(200),
};

fn server(istio: bool) -> (tempfile::TempDir, ApiServer) {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start(dir.path()).unwrap();
    if istio {
        api.install_istio_crds();
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube");
    for file in FIXTURES {
        let list: Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures.join(file)).unwrap()).unwrap();
        let kind = list["kind"].as_str().unwrap().trim_end_matches("List");
        for item in list["items"].as_array().unwrap() {
            let mut obj = item.clone();
            obj["apiVersion"] = list["apiVersion"].clone();
            obj["kind"] = json!(kind);
            api.apply_object(obj).unwrap();
        }
    }
    (dir, api)
}

fn client(api: &ApiServer) -> kube::Client {
    kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap()
}

fn names(state: &ApiState, kind: &str) -> Vec<String> {
    state
        .objects(kind)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_for(
    rx: &mut watch::Receiver<ApiState>,
    what: &str,
    mut cond: impl FnMut(&ApiState) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if cond(&rx.borrow_and_update()) {
            return;
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            let state = rx.borrow();
            panic!(
                "timed out waiting for {what}; synced={} pods={:?} secrets={:?}",
                state.synced(),
                names(&state, "Pod"),
                names(&state, "Secret")
            );
        }
    }
}

/// Requests for `resource` that were lists (`watch == false`) or watches.
fn count(api: &ApiServer, resource: &str, watch: bool) -> usize {
    let verb = if watch { "watch" } else { "list" };
    api.requests()
        .iter()
        .filter(|r| r.resource == resource && r.verb == verb)
        .count()
}

fn pod(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "app", "uid": "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d",
                        "labels": {"app": name}},
           "spec": {"nodeName": node, "serviceAccountName": "default", "containers": [{"name": "c", "image": "busybox"}]},
           "status": {"phase": "Pending", "qosClass": "BestEffort"}})
}

#[tokio::test]
async fn watches_the_api_through_events_relists_and_outages() {
    let (_dir, replay) = server(true);
    replay.set_down(true);
    let mut rx = api_source::start(client(&replay), BACKOFF);

    // Phase 0: the API is unreachable: nothing is synced.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!rx.borrow().synced());

    // Phase 1: first list of every kind, then synced.
    replay.set_down(false);
    wait_for(&mut rx, "first sync", |s| {
        s.synced() && names(s, "Secret").len() == 2
    })
    .await;
    {
        let s = rx.borrow();
        assert_eq!(
            names(&s, "Pod"),
            ["client-6b7d9c5f4-x2x9q", "server-0", "server-1"],
            "every node's pods are known"
        );
        assert_eq!(names(&s, "Namespace"), ["app", "default"]);
        assert_eq!(names(&s, "Service"), ["server", "kubernetes"]);
        assert_eq!(names(&s, "PeerAuthentication"), ["default"]);
        assert_eq!(names(&s, "DestinationRule"), ["external-api"]);
        assert_eq!(names(&s, "ServiceEntry"), ["external-api"]);
        assert_eq!(names(&s, "Secret"), ["client-creds", "client-creds-cacert"]);
        let kinds: Vec<&str> = s.watches().map(|w| w.kind.as_str()).collect();
        assert!(!kinds.contains(&"MeshPolicy") && !kinds.contains(&"Policy"));
        let pod = s.objects("Pod")[1];
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["apiVersion"], "v1");
        assert_eq!(pod["status"]["qosClass"], "Guaranteed");
        assert!(
            pod["metadata"]["managedFields"].is_null(),
            "pods are stored cut down"
        );
    }
    assert!(
        replay
            .requests()
            .iter()
            .filter(|r| r.resource == "pods")
            .all(|r| !r.query.contains("fieldSelector")),
        "pods are listed for every node: {:?}",
        replay.requests()
    );

    // Phase 2: live events, a bookmark, and a DestinationRule naming another Secret.
    replay.apply_object(pod("worker", "node-a")).unwrap();
    replay.apply_object(pod("elsewhere", "node-b")).unwrap();
    replay.delete("v1", "Service", "app", "server").unwrap();
    replay.bookmark("v1", "Pod").unwrap();
    let mut dr = rx.borrow().objects("DestinationRule")[0].clone();
    dr["spec"]["trafficPolicy"]["tls"]["credentialName"] = json!("other-creds");
    replay.apply_object(dr).unwrap();
    wait_for(&mut rx, "live events", |s| {
        names(s, "Pod").contains(&"worker".to_owned())
            && names(s, "Service") == ["kubernetes"]
            && names(s, "Secret") == ["other-creds"]
            && s.synced()
    })
    .await;
    assert!(names(&rx.borrow(), "Pod").contains(&"elsewhere".to_owned()));
    assert!(
        replay
            .requests()
            .iter()
            .any(|r| r.resource == "pods" && r.query.contains("allowWatchBookmarks=true")),
        "watches ask for bookmarks"
    );

    // Phase 3: a dropped stream resumes from its resource version, without a re-list.
    let pod_lists = count(&replay, "pods", false);
    replay.drop_streams();
    replay.apply_object(pod("after-drop", "node-a")).unwrap();
    wait_for(&mut rx, "event after a dropped stream", |s| {
        names(s, "Pod").contains(&"after-drop".to_owned())
    })
    .await;
    assert_eq!(
        count(&replay, "pods", false),
        pod_lists,
        "resumed, not re-listed"
    );
    assert!(count(&replay, "pods", true) >= 2, "watched again");

    // Phase 4: 410 Gone: a change the watch never saw arrives through the forced re-list.
    replay
        .apply_unseen(pod("seen-by-relist", "node-a"))
        .unwrap();
    replay.expire();
    wait_for(&mut rx, "re-list after 410", |s| {
        names(s, "Pod").contains(&"seen-by-relist".to_owned())
    })
    .await;
    assert!(
        count(&replay, "pods", false) > pod_lists,
        "re-listed after 410"
    );
    assert!(rx.borrow().synced());

    // Phase 5: an outage keeps the last known state; changes made meanwhile arrive afterwards.
    let before = names(&rx.borrow(), "Pod");
    replay.set_down(true);
    replay.delete("v1", "Pod", "app", "worker").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let s = rx.borrow();
        assert_eq!(names(&s, "Pod"), before, "state survives the outage");
        assert_eq!(names(&s, "Namespace"), ["app", "default"]);
        assert!(s.synced());
    }
    replay.set_down(false);
    wait_for(&mut rx, "changes made during the outage", |s| {
        !names(s, "Pod").contains(&"worker".to_owned())
    })
    .await;
    assert_eq!(names(&rx.borrow(), "Secret"), ["other-creds"]);
}

/// API pods plus cgroups appearing on disk give the enroller's pod set; a container cgroup created
/// later shows up without any API event.
#[tokio::test]
async fn node_pods_follow_the_api_and_new_container_cgroups() {
    use sockmesh_agent::kube::{
        cgroup_layout::{Driver, Qos},
        cgroup_watch,
        discovery::Layout,
        node_pods::watch_node_pods,
    };
    use std::{fs, sync::Arc};

    struct Tree(std::path::PathBuf);
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let tree =
        Tree(std::env::temp_dir().join(format!("sockmesh-node-pods-{}", std::process::id())));
    let client_uid = "3f6c2a1e-8d4b-4e7a-9c1f-0a2b3c4d5e6f";
    let pod_dir = tree
        .0
        .join(Driver::Systemd.pod_dir(client_uid, Qos::Burstable));
    let sandbox = pod_dir.join(format!("cri-containerd-{}.scope", "b".repeat(64)));
    fs::create_dir_all(&sandbox).unwrap();
    fs::write(
        sandbox.join("cgroup.procs"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();

    let (_dir, replay) = server(true);
    let mut api = api_source::start(client(&replay), BACKOFF);
    wait_for(&mut api, "first sync", ApiState::synced).await;
    let layout = Layout::detect(&tree.0, Path::new("")).unwrap();
    let cgroups = cgroup_watch::watch(&layout).unwrap();
    let mut pods = watch_node_pods(
        "node-a".into(),
        api,
        cgroups,
        layout,
        None,
        Arc::new(|ns, _| ns == "app"),
    );

    let specs = pods.borrow_and_update().clone();
    assert_eq!(specs.len(), 1, "only the client pod has cgroups: {specs:?}");
    assert_eq!(specs[0].key(), "app/client-6b7d9c5f4-x2x9q");
    assert_eq!(
        specs[0].cgroups.len(),
        2,
        "the pod cgroup and its container"
    );

    fs::create_dir(pod_dir.join(format!("cri-containerd-{}.scope", "a".repeat(64)))).unwrap();
    tokio::time::timeout(Duration::from_secs(2), pods.changed())
        .await
        .expect("new container cgroup reported")
        .unwrap();
    let specs = pods.borrow_and_update().clone();
    assert_eq!(specs[0].cgroups.len(), 3);
    assert_eq!(
        specs[0].ips,
        ["10.244.1.12".parse::<std::net::IpAddr>().unwrap()]
    );
}

/// Istio installed after the agent: its kinds are found by the periodic rediscovery and watched,
/// with no restart; a CRD removed again stops its watch and takes its objects with it.
#[tokio::test]
async fn istio_kinds_installed_later_are_watched() {
    let (_dir, api) = server(false);
    let mut rx = api_source::start(client(&api), BACKOFF);
    wait_for(&mut rx, "first sync without Istio", ApiState::synced).await;
    assert!(names(&rx.borrow(), "PeerAuthentication").is_empty());
    let kinds: Vec<String> = rx.borrow().watches().map(|w| w.kind.clone()).collect();
    assert_eq!(kinds, ["Namespace", "Pod", "Service"], "only core kinds");

    api.install_istio_crds();
    wait_for(&mut rx, "PeerAuthentication after the CRDs appear", |s| {
        s.synced() && names(s, "PeerAuthentication") == ["default"]
    })
    .await;
    assert_eq!(names(&rx.borrow(), "DestinationRule"), ["external-api"]);
}
