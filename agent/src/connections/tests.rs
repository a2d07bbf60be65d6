use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::flow::{Direction, fixtures::outbound_info};

#[test]
fn tracker_lists_until_guard_drops() {
    let tracker = Arc::new(ConnectionTracker::default());
    let first = tracker.register(outbound_info());
    let mut inbound = outbound_info();
    inbound.direction = Direction::Inbound;
    let second = tracker.register(inbound);
    assert_ne!(first.id(), second.id());

    let snap = tracker.snapshot();
    assert_eq!(snap.len(), 2);
    assert_eq!(snap[0].id, first.id());
    assert_eq!(snap[1].info.direction, Direction::Inbound);

    drop(first);
    let snap = tracker.snapshot();
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].id, second.id());
    drop(second);
    assert!(tracker.is_empty());
}

#[test]
fn snapshot_json_is_flat() {
    let tracker = Arc::new(ConnectionTracker::default());
    let _guard = tracker.register(outbound_info());
    let json = serde_json::to_value(tracker.snapshot()).unwrap();
    let c = &json[0];
    assert_eq!(c["direction"], "outbound");
    assert_eq!(c["mode"], "mutual_tls");
    assert_eq!(c["destination"]["original"], "10.96.0.10:80");
    assert_eq!(c["bytes"]["received"], 0);
    let back: Vec<ConnectionSnapshot> = serde_json::from_value(json).unwrap();
    assert_eq!(back[0].info, outbound_info());
}

#[tokio::test]
async fn counted_stream_counts_both_ways() {
    let tracker = Arc::new(ConnectionTracker::default());
    let guard = tracker.register(outbound_info());
    let (source_side, mut app) = tokio::io::duplex(64);
    let mut counted = guard.count(source_side);

    app.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    counted.read_exact(&mut buf).await.unwrap();
    counted.write_all(b"abc").await.unwrap();
    let mut back = [0u8; 3];
    app.read_exact(&mut back).await.unwrap();

    let bytes = guard.bytes();
    assert_eq!((bytes.received, bytes.sent), (5, 3));
    assert_eq!(tracker.snapshot()[0].bytes, bytes);
    drop(counted.into_inner());
}
