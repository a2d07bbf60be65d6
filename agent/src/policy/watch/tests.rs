use super::*;

#[test]
fn reload_applies_good_and_keeps_last_good_on_error() {
    let dir = std::env::temp_dir().join(format!("sockmesh-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    )
    .unwrap();
    let (source, handle) = FileSource::load(&dir, MeshSettings::default()).unwrap();
    let rx = handle.subscribe();
    let before = handle.current();
    assert_eq!(before.resources.namespaces.len(), 1);

    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\nkind: [\n",
    )
    .unwrap();
    source.reload(&handle);
    assert!(Arc::ptr_eq(&before, &handle.current()));
    assert!(handle.last_error().is_some());

    std::fs::write(
        dir.join("d.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: d}\n",
    )
    .unwrap();
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    )
    .unwrap();
    source.reload(&handle);
    assert_eq!(handle.current().resources.namespaces.len(), 2);
    assert!(handle.last_error().is_none());
    assert!(rx.has_changed().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn polling_picks_up_a_change_within_a_second() {
    let dir = std::env::temp_dir().join(format!("sockmesh-poll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("c.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
    )
    .unwrap();
    let handle = FileSource::start(&dir, MeshSettings::default()).unwrap();
    let mut rx = handle.subscribe();
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(
        dir.join("d.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: d}\n",
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(1), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(handle.current().resources.namespaces.len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn new_settings_rebuild_the_snapshot_and_stay_for_later_changes() {
    const MESH_STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
        metadata: {name: default, namespace: mesh-root}\nspec: {mtls: {mode: STRICT}}\n---\n\
        apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
    let report = crate::policy::load::load_str(MESH_STRICT);
    let resources = report.resources.clone();
    let handle = ConfigHandle::new(Snapshot::from_report(report, MeshSettings::default()).unwrap());
    let rx = handle.subscribe();
    let root = |h: &ConfigHandle| h.current().settings.root_namespace.clone();
    let moved = MeshSettings {
        root_namespace: "mesh-root".into(),
        auto_mtls: false,
        ..MeshSettings::default()
    };
    handle.set_settings(moved.clone());
    assert_eq!(root(&handle), "mesh-root");
    assert!(!handle.current().settings.auto_mtls);
    assert_eq!(handle.current().resources.peer_authentications.len(), 1);
    assert!(rx.has_changed().unwrap());

    let before = handle.current();
    handle.set_settings(moved);
    assert!(
        Arc::ptr_eq(&before, &handle.current()),
        "unchanged: not rebuilt"
    );
    handle.apply(resources, Vec::new());
    assert_eq!(
        root(&handle),
        "mesh-root",
        "a resource change keeps the settings"
    );
}
