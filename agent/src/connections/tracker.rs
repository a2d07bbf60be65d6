//! Registry of open connections for `/connections`. Register and remove are O(1) on one of a
//! few mutex-protected shards (picked by id), so concurrent accepts rarely contend.
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Instant, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::{Counted, counted::LiveBytes};
use crate::flow::{ByteCount, ConnectionInfo};

const SHARDS: usize = 16;

/// One tracked connection.
#[derive(Debug)]
struct Tracked {
    info: Arc<ConnectionInfo>,
    started: SystemTime,
    start: Instant,
    bytes: Arc<LiveBytes>,
}

/// Open connections, keyed by an id unique for the agent's lifetime.
#[derive(Debug)]
pub struct ConnectionTracker {
    next_id: AtomicU64,
    shards: [Mutex<HashMap<u64, Arc<Tracked>>>; SHARDS],
}

impl Default for ConnectionTracker {
    fn default() -> Self {
        Self {
            next_id: AtomicU64::new(1),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl ConnectionTracker {
    /// Starts tracking; the connection is listed until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, info: ConnectionInfo) -> ConnectionGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tracked = Arc::new(Tracked {
            info: Arc::new(info),
            started: SystemTime::now(),
            start: Instant::now(),
            bytes: Arc::default(),
        });
        self.shard(id).insert(id, tracked.clone());
        ConnectionGuard {
            tracker: self.clone(),
            id,
            tracked,
        }
    }

    /// Open connections, oldest first.
    pub fn snapshot(&self) -> Vec<ConnectionSnapshot> {
        let mut all: Vec<ConnectionSnapshot> = self
            .shards
            .iter()
            .flat_map(|s| {
                lock(s)
                    .iter()
                    .map(|(id, t)| snapshot(*id, t))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, id: u64) -> MutexGuard<'_, HashMap<u64, Arc<Tracked>>> {
        lock(&self.shards[(id % SHARDS as u64) as usize])
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn bytes_of(t: &Tracked) -> ByteCount {
    ByteCount {
        received: t.bytes.received.load(Ordering::Relaxed),
        sent: t.bytes.sent.load(Ordering::Relaxed),
    }
}

fn snapshot(id: u64, t: &Tracked) -> ConnectionSnapshot {
    ConnectionSnapshot {
        id,
        info: ConnectionInfo::clone(&t.info),
        started: humantime::format_rfc3339_seconds(t.started).to_string(),
        duration_ms: u64::try_from(t.start.elapsed().as_millis()).unwrap_or(u64::MAX),
        bytes: bytes_of(t),
    }
}

/// A connection as `/connections` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionSnapshot {
    pub id: u64,
    #[serde(flatten)]
    pub info: ConnectionInfo,
    /// RFC 3339, UTC.
    pub started: String,
    pub duration_ms: u64,
    pub bytes: ByteCount,
}

/// Keeps a connection listed; removes it on drop.
#[derive(Debug)]
pub struct ConnectionGuard {
    tracker: Arc<ConnectionTracker>,
    id: u64,
    tracked: Arc<Tracked>,
}

impl ConnectionGuard {
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn info(&self) -> &Arc<ConnectionInfo> {
        &self.tracked.info
    }

    /// Wraps the source-side stream so the forwarder's reads and writes are counted.
    pub fn count<S>(&self, stream: S) -> Counted<S> {
        Counted::new(stream, self.tracked.bytes.clone(), false)
    }

    /// Wraps the destination-side stream, with the directions swapped.
    pub fn count_destination<S>(&self, stream: S) -> Counted<S> {
        Counted::new(stream, self.tracked.bytes.clone(), true)
    }

    /// Bytes moved so far.
    pub fn bytes(&self) -> ByteCount {
        bytes_of(&self.tracked)
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.tracked.start.elapsed()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.tracker.shard(self.id).remove(&self.id);
    }
}
