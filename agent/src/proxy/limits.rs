//! Connection limits, checked before anything is spent on a connection (no task, no upstream
//! socket, no pipe), so that a client outside the mesh, or a flood, cannot take the file
//! descriptors that mesh connections and the agent's own servers need:
//!
//! - **total**: connections in flight, both directions;
//! - **per source**: inbound connections from one address that are not (yet) mesh mTLS, i.e.
//!   being classified, in a handshake, or plaintext/other TLS passed through; a mesh connection
//!   leaves this count once its client certificate is verified;
//! - **passthrough**: inbound connections passed through unencrypted or with the app's own TLS,
//!   at most a share of the total, so the rest stays for mesh traffic.
//!
//! A proxied connection holds two sockets; one spliced between two plain sockets also holds two
//! pipes, six fds in all. The defaults share the fd limit, less a reserve for the admin API,
//! readiness, metrics, the configuration watch and certificate files: the total allows two fds a
//! connection, and passthrough connections (spliced, six fds) may use at most half of the budget.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::{metrics::RefusalReason, proxy::refusal::Refusal};

/// File descriptors kept for everything that is not a proxied connection.
pub const FD_RESERVE: u64 = 1024;
/// File descriptors every proxied connection holds (its two sockets).
pub const FDS_PER_CONNECTION: u64 = 2;
/// File descriptors a spliced connection holds (two sockets, two pipes).
pub const FDS_PER_SPLICED: u64 = 6;

/// The limits; zero means the default derived from the fd limit.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub total: usize,
    pub per_source: usize,
    pub passthrough: usize,
}

impl Limits {
    /// Limits that fit in `nofile` descriptors; explicit (non-zero) values in `wanted` win.
    pub fn for_fd_limit(nofile: u64, wanted: Limits) -> Limits {
        let budget = nofile.saturating_sub(FD_RESERVE.min(nofile / 4));
        let count = |fds: u64| usize::try_from(fds).unwrap_or(usize::MAX).max(8);
        let total = non_zero(wanted.total, count(budget / FDS_PER_CONNECTION));
        Limits {
            total,
            per_source: non_zero(wanted.per_source, (total / 8).clamp(8, 4096)),
            passthrough: non_zero(wanted.passthrough, count(budget / 2 / FDS_PER_SPLICED)),
        }
    }
}

fn non_zero(wanted: usize, default: usize) -> usize {
    if wanted == 0 { default } else { wanted }
}

/// What is in use against the limits.
pub struct Usage {
    limits: Limits,
    total: AtomicUsize,
    passthrough: AtomicUsize,
    unauthenticated: Mutex<HashMap<IpAddr, usize>>,
}

impl Usage {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            total: AtomicUsize::new(0),
            passthrough: AtomicUsize::new(0),
            unauthenticated: Mutex::new(HashMap::new()),
        }
    }

    /// Connections in flight.
    pub fn in_flight(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Takes a slot for a new connection, given back with [`Usage::release`].
    pub fn accept(&self) -> Result<(), Refusal> {
        if take(&self.total, self.limits.total) {
            return Ok(());
        }
        let why = format!("{} connections in flight (limit)", self.limits.total);
        Err(Refusal::new(RefusalReason::ConnectionLimit, why))
    }

    /// Gives back what [`Usage::accept`] took.
    pub fn release(&self) {
        self.total.fetch_sub(1, Ordering::AcqRel);
    }

    /// Takes one of `source`'s slots for connections that are not mesh mTLS, until the guard
    /// drops (when the connection ends, or once its client certificate is verified).
    pub fn unauthenticated(&self, source: IpAddr) -> Result<SourceSlot<'_>, Refusal> {
        let mut by_source = self.lock();
        let count = by_source.entry(source).or_default();
        if *count >= self.limits.per_source {
            let why = format!(
                "{} connections from {source} that are not mesh mTLS (limit)",
                self.limits.per_source
            );
            return Err(Refusal::new(RefusalReason::ConnectionLimit, why));
        }
        *count += 1;
        Ok(SourceSlot {
            usage: self,
            source,
        })
    }

    /// Takes a passthrough slot until the returned guard drops.
    pub fn passthrough(&self) -> Result<PassthroughSlot<'_>, Refusal> {
        if take(&self.passthrough, self.limits.passthrough) {
            return Ok(PassthroughSlot(self));
        }
        let why = format!(
            "{} passthrough connections (limit; the rest is kept for mesh mTLS)",
            self.limits.passthrough
        );
        Err(Refusal::new(RefusalReason::ConnectionLimit, why))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.unauthenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One connection from `source` that is not mesh mTLS.
pub struct SourceSlot<'a> {
    usage: &'a Usage,
    source: IpAddr,
}

impl Drop for SourceSlot<'_> {
    fn drop(&mut self) {
        let mut by_source = self.usage.lock();
        if let Some(count) = by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

/// One passthrough connection.
pub struct PassthroughSlot<'a>(&'a Usage);

impl Drop for PassthroughSlot<'_> {
    fn drop(&mut self) {
        self.0.passthrough.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Increments `counter` unless it reached `limit`.
fn take(counter: &AtomicUsize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_source: usize, passthrough: usize) -> Usage {
        Usage::new(Limits {
            total,
            per_source,
            passthrough,
        })
    }

    #[test]
    fn total_and_per_source_limits_refuse_and_give_back() {
        let usage = limits(3, 2, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = usage.unauthenticated(a).unwrap();
        let _second = usage.unauthenticated(a).unwrap();
        let err = usage.unauthenticated(a).err().unwrap();
        assert_eq!(err.reason, RefusalReason::ConnectionLimit);
        assert!(err.error.contains("10.0.0.1"), "{}", err.error);
        let _other = usage.unauthenticated(b).unwrap();
        // A mesh connection drops its slot once authenticated.
        drop(first);
        let _third = usage.unauthenticated(a).unwrap();

        for _ in 0..3 {
            usage.accept().unwrap();
        }
        assert!(usage.accept().is_err(), "total reached");
        assert_eq!(usage.in_flight(), 3);
        usage.release();
        usage.accept().unwrap();
    }

    #[test]
    fn passthrough_share_is_bounded() {
        let usage = limits(10, 10, 1);
        let slot = usage.passthrough().unwrap();
        assert!(usage.passthrough().is_err());
        drop(slot);
        assert!(usage.passthrough().is_ok());
    }

    #[test]
    fn defaults_fit_the_fd_limit() {
        let unset = Limits {
            total: 0,
            per_source: 0,
            passthrough: 0,
        };
        for nofile in [1024, 20_000, 1 << 20] {
            let l = Limits::for_fd_limit(nofile, unset);
            assert!(l.total as u64 * FDS_PER_CONNECTION <= nofile, "{l:?}");
            assert!(
                l.passthrough as u64 * FDS_PER_SPLICED <= nofile / 2,
                "{l:?}"
            );
            assert!(l.passthrough < l.total && l.per_source < l.total, "{l:?}");
        }
        let l = Limits::for_fd_limit(1 << 20, unset);
        assert_eq!(
            l.total as u64,
            ((1 << 20) - FD_RESERVE) / FDS_PER_CONNECTION
        );
        let explicit = Limits { total: 50, ..unset };
        assert_eq!(Limits::for_fd_limit(1 << 20, explicit).total, 50);
    }
}
