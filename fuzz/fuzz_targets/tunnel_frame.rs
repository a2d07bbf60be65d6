//! The frame decoder of pooled tunnels (`proxy::tunnel::frame`) and the stream relay on top of it
//! (`proxy::tunnel::relay::relay`): bytes a peer proxy sends must never panic, and a relay fed a
//! finished byte stream must end with `Ok` or `Err`, never hang.
#![no_main]

use std::{sync::OnceLock, time::Duration};

use libfuzzer_sys::fuzz_target;
use sockmesh_agent::proxy::tunnel::frame::{MAX_PAYLOAD, read_answer, read_header, read_open};
use sockmesh_agent::proxy::tunnel::relay::relay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One current-thread runtime for all inputs.
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    });
    runtime.block_on(async {
        let _ = read_open(&mut &data[..]).await;
        let _ = read_answer(&mut &data[..]).await;
        frames(data).await;
        relayed(data).await;
    });
});

/// Reads headers one after another, skipping each payload, until the end or an error.
async fn frames(data: &[u8]) {
    let mut r = data;
    while let Ok(Some((_kind, len))) = read_header(&mut r).await {
        assert!(len <= MAX_PAYLOAD);
        let skip = len.min(r.len());
        r = &r[skip..];
    }
}

/// `data` as what the peer proxy sent on the tunnel (writes go nowhere), with an app that has
/// nothing to send and reads whatever the relay writes to it.
async fn relayed(data: &[u8]) {
    let mut conn = tokio::io::join(data, tokio::io::sink());
    let (mut app, mut peer) = tokio::io::duplex(64 * 1024);
    let relaying = async move {
        let result = relay(&mut conn, &mut app).await;
        // Ends the app's reads below, whether or not the relay half-closed it.
        drop(app);
        result
    };
    let app_side = async move {
        peer.shutdown().await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        while peer.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    };
    let both = async { tokio::join!(relaying, app_side).0 };
    // Nothing here waits on anything outside: a timeout is a hang of the relay. `Ok` and `Err` are
    // both fine answers to arbitrary bytes.
    let _ended: std::io::Result<()> = tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("the relay hung on a finished input");
}
