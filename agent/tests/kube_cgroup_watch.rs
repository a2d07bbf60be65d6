//! The cgroup watch on the real cgroup2 hierarchy: a kubelet-like tree under a private temporary
//! cgroup, pods and containers created while watching, events expected within milliseconds.
//! Needs root (it creates cgroups).
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sockmesh_agent::{
    cgroup,
    kube::{
        cgroup_layout::{Driver, Qos},
        cgroup_watch::{CgroupEvent, watch},
        discovery::Layout,
    },
};
use tokio::sync::mpsc::UnboundedReceiver;

/// A temporary cgroup removed (deepest first) even when the test fails.
struct TempCgroup {
    mount: PathBuf,
    rel: PathBuf,
}

impl TempCgroup {
    fn new() -> TempCgroup {
        let mount = cgroup::cgroup2_mount().expect("cgroup2 mount");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let rel = PathBuf::from(format!("sockmesh-test-kube-{}-{nanos}", std::process::id()));
        fs::create_dir(mount.join(&rel)).expect("creating test cgroup (root needed)");
        TempCgroup { mount, rel }
    }

    fn mkdir(&self, rel: &Path) -> PathBuf {
        let path = self.rel.join(rel);
        fs::create_dir(self.mount.join(&path)).unwrap();
        path
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        fn rmdir_tree(dir: &Path) {
            if let Ok(entries) = fs::read_dir(dir) {
                for e in entries.filter_map(Result::ok) {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        rmdir_tree(&e.path());
                    }
                }
            }
            let _ = fs::remove_dir(dir);
        }
        rmdir_tree(&self.mount.join(&self.rel));
    }
}

async fn next(rx: &mut UnboundedReceiver<CgroupEvent>) -> (CgroupEvent, Duration) {
    let start = Instant::now();
    let event = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .expect("no cgroup event within 2s")
        .expect("watch ended");
    (event, start.elapsed())
}

const UID: &str = "5f0e2c1a-9b8d-4e7f-a6c5-b4d3e2f1a0b9";
const UID2: &str = "11111111-2222-4333-8444-555555555555";

#[tokio::test]
async fn reports_pods_and_containers_as_they_are_created() {
    let cg = TempCgroup::new();
    let slice = cg.mkdir(Path::new("kubepods.slice"));
    let burstable = cg.mkdir(&Path::new("kubepods.slice").join("kubepods-burstable.slice"));
    let layout = Layout::detect(&cg.mount, &cg.rel).expect("kubepods.slice");
    assert_eq!(layout.driver, Driver::Systemd);
    assert_eq!(layout.kubepods(), cg.mount.join(&slice));
    let mut rx = watch(&layout).unwrap();

    // A Burstable pod: the pod slice, then the sandbox and an app container.
    let pod = cg.mkdir(&Driver::Systemd.pod_dir(UID, Qos::Burstable));
    let (event, took) = next(&mut rx).await;
    assert_eq!(
        event,
        CgroupEvent::Pod {
            uid: UID.into(),
            dir: pod.clone()
        }
    );
    assert!(took < Duration::from_millis(500), "pod event took {took:?}");
    assert!(pod.starts_with(&burstable));

    for n in ["a", "b"] {
        let id = n.repeat(64);
        let path = cg.mkdir(
            &Path::new(&pod)
                .strip_prefix(&cg.rel)
                .unwrap()
                .join(format!("cri-containerd-{id}.scope")),
        );
        let (event, took) = next(&mut rx).await;
        match event {
            CgroupEvent::Container { uid, path: p, name } => {
                assert_eq!((uid.as_str(), &p, name.id.as_str()), (UID, &path, &*id));
            }
            other => panic!("expected container event, got {other:?}"),
        }
        assert!(
            took < Duration::from_millis(500),
            "container event took {took:?}"
        );
    }

    // A Guaranteed pod directly under kubepods.slice, with a conmon scope that is not reported.
    let pod2 = cg.mkdir(&Driver::Systemd.pod_dir(UID2, Qos::Guaranteed));
    let pod2_rel = pod2.strip_prefix(&cg.rel).unwrap().to_path_buf();
    cg.mkdir(&pod2_rel.join(format!("crio-conmon-{}.scope", "c".repeat(64))));
    let app = cg.mkdir(&pod2_rel.join(format!("crio-{}.scope", "d".repeat(64))));
    assert_eq!(
        next(&mut rx).await.0,
        CgroupEvent::Pod {
            uid: UID2.into(),
            dir: pod2
        }
    );
    match next(&mut rx).await.0 {
        CgroupEvent::Container { uid, path, .. } => assert_eq!((uid.as_str(), path), (UID2, app)),
        other => panic!("expected container event, got {other:?}"),
    }

    // Discovery agrees with what was reported.
    let found = layout.pod(UID, Qos::Burstable).unwrap();
    assert_eq!(found.containers.len(), 2);
}

#[tokio::test]
async fn reports_existing_cgroups_at_start() {
    let cg = TempCgroup::new();
    cg.mkdir(Path::new("kubepods"));
    cg.mkdir(Path::new("kubepods/besteffort"));
    let pod = cg.mkdir(&Driver::Cgroupfs.pod_dir(UID, Qos::BestEffort));
    let container = cg.mkdir(&pod.strip_prefix(&cg.rel).unwrap().join("e".repeat(64)));
    let layout = Layout::detect(&cg.mount, &cg.rel).unwrap();
    assert_eq!(layout.driver, Driver::Cgroupfs);
    let mut rx = watch(&layout).unwrap();
    assert_eq!(
        next(&mut rx).await.0,
        CgroupEvent::Pod {
            uid: UID.into(),
            dir: pod
        }
    );
    match next(&mut rx).await.0 {
        CgroupEvent::Container { path, .. } => assert_eq!(path, container),
        other => panic!("expected container event, got {other:?}"),
    }
}
