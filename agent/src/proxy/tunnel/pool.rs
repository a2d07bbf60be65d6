//! The client side's idle pooled connections, reused for the next connection from the same pod to
//! the same destination pod with the same TLS expectations: a new connection then costs an `Open`
//! frame and its answer, not a TCP and TLS handshake.
use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::Mutex,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use tokio::io::{AsyncRead, ReadBuf};

use crate::identity::SpiffeId;

/// An idle connection is closed after this long unused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections kept per key; more are closed as their streams end.
const MAX_IDLE_PER_KEY: usize = 64;

/// What a reused connection must match: the socket lives in the source pod's netns and presents
/// its identity, reaches one destination pod, and was verified against one expected identity set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub pod: u32,
    pub destination: IpAddr,
    pub sni: Option<String>,
    pub expected: Vec<SpiffeId>,
}

/// Idle connections by key, most recently used last.
pub struct Pool<C> {
    idle: Mutex<HashMap<PoolKey, Vec<(C, Instant)>>>,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
        }
    }
}

impl<C: AsyncRead + Unpin> Pool<C> {
    /// The most recently used live connection for `key`. A connection that was closed by the peer
    /// or has stray bytes waiting is dropped on the way.
    pub fn take(&self, key: &PoolKey) -> Option<C> {
        loop {
            let (mut conn, since) = {
                let mut idle = self.idle.lock().expect("pool lock");
                let list = idle.get_mut(key)?;
                let entry = list.pop();
                if list.is_empty() {
                    idle.remove(key);
                }
                entry?
            };
            if since.elapsed() < IDLE_TIMEOUT && nothing_arrived(&mut conn) {
                return Some(conn);
            }
        }
    }

    /// Returns a connection whose stream ended cleanly.
    pub fn put(&self, key: PoolKey, conn: C) {
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_KEY {
            list.push((conn, Instant::now()));
        }
    }

    /// Closes connections idle for longer than [`IDLE_TIMEOUT`].
    pub fn reap(&self) {
        let mut idle = self.idle.lock().expect("pool lock");
        idle.retain(|_, list| {
            list.retain(|(_, since)| since.elapsed() < IDLE_TIMEOUT);
            !list.is_empty()
        });
    }

    /// Closes every idle connection (the agent is draining).
    pub fn clear(&self) {
        self.idle.lock().expect("pool lock").clear();
    }

    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .expect("pool lock")
            .values()
            .map(Vec::len)
            .sum()
    }
}

/// An idle connection must have nothing to read: an EOF or bytes mean the peer closed it or broke
/// the protocol, and it must not carry a stream.
fn nothing_arrived<C: AsyncRead + Unpin>(conn: &mut C) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(Pin::new(conn).poll_read(&mut cx, &mut buf), Poll::Pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    fn key(pod: u32) -> PoolKey {
        PoolKey {
            pod,
            destination: "10.0.0.7".parse().unwrap(),
            sni: None,
            expected: vec![
                "spiffe://cluster.local/ns/a/sa/b"
                    .parse::<SpiffeId>()
                    .unwrap(),
            ],
        }
    }

    #[tokio::test]
    async fn reuses_live_connections_of_the_same_key_only() {
        let pool = Pool::<DuplexStream>::default();
        let (conn, _peer) = tokio::io::duplex(64);
        pool.put(key(1), conn);
        assert!(pool.take(&key(2)).is_none());
        assert!(pool.take(&key(1)).is_some());
        assert!(pool.take(&key(1)).is_none());
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn closed_or_chatty_connections_are_dropped() {
        let pool = Pool::<DuplexStream>::default();
        let (closed, peer) = tokio::io::duplex(64);
        drop(peer);
        let (chatty, mut talker) = tokio::io::duplex(64);
        talker.write_all(b"x").await.unwrap();
        pool.put(key(1), closed);
        pool.put(key(1), chatty);
        assert!(pool.take(&key(1)).is_none());
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn clear_closes_everything() {
        let pool = Pool::<DuplexStream>::default();
        let (conn, mut peer) = tokio::io::duplex(64);
        pool.put(key(1), conn);
        pool.clear();
        let mut buf = [0u8; 1];
        assert_eq!(
            tokio::io::AsyncReadExt::read(&mut peer, &mut buf)
                .await
                .unwrap(),
            0
        );
    }
}
