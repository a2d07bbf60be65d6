//! The API source against a local replay of kube-apiserver (no real apiserver can run here):
//! first list and sync, live events and bookmarks, credential Secrets following DestinationRules,
//! a dropped stream resumed from its resource version, `410 Gone` forcing a re-list, and an
//! outage during which the last known state stays published.
mod kube_replay;

use std::{path::Path, time::Duration};

use kube_replay::Replay;
use serde_json::json;
use sockmesh_agent::kube::{
    api_source::{self, Backoff},
    api_state::ApiState,
};
use tokio::sync::watch;

const PODS: &str = "/api/v1/pods";
const NAMESPACES: &str = "/api/v1/namespaces";
const SERVICES: &str = "/api/v1/services";
const SECRETS: &str = "/api/v1/secrets";
const DRS: &str = "/apis/networking.istio.io/v1/destinationrules";

async fn replay() -> Replay {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube");
    Replay::start(
        &fixtures,
        &[
            (PODS, "pods.json"),
            (NAMESPACES, "namespaces.json"),
            (SERVICES, "services.json"),
            (SECRETS, "secrets.json"),
            (DRS, "destinationrules.json"),
            (
                "/apis/networking.istio.io/v1/serviceentries",
                "serviceentries.json",
            ),
            (
                "/apis/security.istio.io/v1/peerauthentications",
                "peerauthentications.json",
            ),
        ],
    )
    .await
}

fn client(replay: &Replay) -> kube::Client {
    let url = format!("http://{}", replay.addr).parse().unwrap();
    kube::Client::try_from(kube::Config::new(url)).unwrap()
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

fn count(replay: &Replay, prefix: &str, watch: bool) -> usize {
    replay
        .requests()
        .iter()
        .filter(|r| r.starts_with(prefix) && r.contains("watch=true") == watch)
        .count()
}

fn pod(name: &str, node: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "app", "uid": "6a5b4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d",
                        "labels": {"app": name}},
           "spec": {"nodeName": node, "serviceAccountName": "default", "containers": [{"name": "c", "image": "busybox"}]},
           "status": {"phase": "Pending", "qosClass": "BestEffort"}})
}

#[tokio::test]
async fn watches_the_api_through_events_relists_and_outages() {
    let replay = replay().await;
    replay.set_down(true);
    let backoff = Backoff {
        min: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    let mut rx = api_source::start(client(&replay), "node-a", backoff);

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
        assert_eq!(names(&s, "Pod"), ["client-6b7d9c5f4-x2x9q", "server-0"]);
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
    }
    assert!(
        replay
            .requests()
            .iter()
            .any(|r| r.starts_with(PODS) && r.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "pods are listed for this node only: {:?}",
        replay.requests()
    );

    // Phase 2: live events, a bookmark, and a DestinationRule naming another Secret.
    replay.apply(PODS, pod("worker", "node-a"));
    replay.apply(PODS, pod("elsewhere", "node-b"));
    replay.delete(SERVICES, "app", "server");
    replay.bookmark(PODS);
    let mut dr = rx.borrow().objects("DestinationRule")[0].clone();
    dr["spec"]["trafficPolicy"]["tls"]["credentialName"] = json!("other-creds");
    replay.apply(DRS, dr);
    wait_for(&mut rx, "live events", |s| {
        names(s, "Pod").contains(&"worker".to_owned())
            && names(s, "Service") == ["kubernetes"]
            && names(s, "Secret") == ["other-creds"]
            && s.synced()
    })
    .await;
    assert!(!names(&rx.borrow(), "Pod").contains(&"elsewhere".to_owned()));
    assert!(
        replay
            .requests()
            .iter()
            .any(|r| r.starts_with(PODS) && r.contains("allowWatchBookmarks=true")),
        "watches ask for bookmarks"
    );

    // Phase 3: a dropped stream resumes from its resource version, without a re-list.
    let pod_lists = count(&replay, PODS, false);
    replay.drop_streams();
    replay.apply(PODS, pod("after-drop", "node-a"));
    wait_for(&mut rx, "event after a dropped stream", |s| {
        names(s, "Pod").contains(&"after-drop".to_owned())
    })
    .await;
    assert_eq!(
        count(&replay, PODS, false),
        pod_lists,
        "resumed, not re-listed"
    );

    // Phase 4: 410 Gone: a change the watch never saw arrives through the forced re-list.
    replay.apply_unseen(PODS, pod("seen-by-relist", "node-a"));
    replay.expire();
    wait_for(&mut rx, "re-list after 410", |s| {
        names(s, "Pod").contains(&"seen-by-relist".to_owned())
    })
    .await;
    assert!(
        count(&replay, PODS, false) > pod_lists,
        "re-listed after 410"
    );
    assert!(rx.borrow().synced());

    // Phase 5: an outage keeps the last known state; changes made meanwhile arrive afterwards.
    let before = names(&rx.borrow(), "Pod");
    replay.set_down(true);
    replay.delete(PODS, "app", "worker");
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

    let replay = replay().await;
    let backoff = Backoff {
        min: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    let mut api = api_source::start(client(&replay), "node-a", backoff);
    wait_for(&mut api, "first sync", ApiState::synced).await;
    let layout = Layout::detect(&tree.0, Path::new("")).unwrap();
    let cgroups = cgroup_watch::watch(&layout).unwrap();
    let mut pods = watch_node_pods(api, cgroups, layout, None, Arc::new(|ns, _| ns == "app"));

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
