//! Open inbound connections stay subject to authorization: when the policies change, every open
//! connection is decided again with the same admission rules, and one that is now denied is
//! closed (with a reset both ways) within the time the change takes to apply. ztunnel does the
//! same; Istio's sidecars keep such connections open.
use std::{
    collections::HashMap,
    future::Future,
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;
use tracing::warn;

use super::{admission, request::InboundRequest};
use crate::{metrics::Metrics, policy::Snapshot};

/// Shards of the registry: every inbound connection registers and unregisters, so one lock for
/// all of them would be a point of contention on the hot path.
const SHARDS: usize = 16;

/// The admitted inbound connections that are still open.
#[derive(Default)]
pub struct OpenInbound {
    next_id: AtomicU64,
    open: [Mutex<HashMap<u64, Watched>>; SHARDS],
}

struct Watched {
    request: InboundRequest,
    revocation: Arc<Revocation>,
}

#[derive(Default)]
struct Revocation {
    notify: Notify,
    reason: Mutex<Option<String>>,
}

/// An open connection's registration; dropping it ends the watch.
pub struct Admitted<'a> {
    registry: &'a OpenInbound,
    id: u64,
    revocation: Arc<Revocation>,
}

impl OpenInbound {
    /// Watches an admitted connection until the returned guard drops.
    pub fn watch(&self, request: &InboundRequest) -> Admitted<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revocation = Arc::new(Revocation::default());
        let watched = Watched {
            request: request.clone(),
            revocation: revocation.clone(),
        };
        self.shard(id).insert(id, watched);
        Admitted {
            registry: self,
            id,
            revocation,
        }
    }

    /// Decides every open connection again under `snapshot` and revokes the denied ones; how many
    /// were revoked.
    pub fn recheck(&self, snapshot: &Snapshot, metrics: &Metrics) -> usize {
        let mut revoked = 0;
        for shard in &self.open {
            revoked += Self::recheck_shard(&lock(shard), snapshot, metrics);
        }
        revoked
    }

    fn recheck_shard(
        open: &HashMap<u64, Watched>,
        snapshot: &Snapshot,
        metrics: &Metrics,
    ) -> usize {
        let mut revoked = 0;
        for watched in open.values() {
            let decision = admission::authorize(snapshot, &watched.request);
            let policy = decision.policy.clone().unwrap_or_else(|| "-".into());
            let Some(refusal) = admission::denial(decision) else {
                continue;
            };
            let mut reason = watched
                .revocation
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if reason.is_none() {
                let request = &watched.request;
                warn!(client = %request.client, dst = %request.destination, pod = %request.pod.spec.key(), reason = %refusal.error, "open connection denied by changed policy; closing");
                metrics.connection_revoked(&policy);
                *reason = Some(format!("closed by policy change: {}", refusal.error));
                watched.revocation.notify.notify_one();
                revoked += 1;
            }
        }
        revoked
    }

    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Watched>> {
        lock(&self.open[id as usize % SHARDS])
    }
}

fn lock(shard: &Mutex<HashMap<u64, Watched>>) -> std::sync::MutexGuard<'_, HashMap<u64, Watched>> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

impl Admitted<'_> {
    /// Runs `forwarding` unless the connection is revoked first, which ends it with an error.
    pub async fn until_revoked(
        &self,
        forwarding: impl Future<Output = io::Result<()>>,
    ) -> io::Result<()> {
        tokio::select! {
            result = forwarding => result,
            reason = self.revoked() => Err(io::Error::new(io::ErrorKind::PermissionDenied, reason)),
        }
    }

    /// Waits until the connection is revoked; the reason.
    pub async fn revoked(&self) -> String {
        loop {
            self.revocation.notify.notified().await;
            if let Some(reason) = self
                .revocation
                .reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return reason;
            }
        }
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.registry.shard(self.id).remove(&self.id);
    }
}
