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
