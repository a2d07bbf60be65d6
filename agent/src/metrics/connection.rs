//! The four Istio TCP counters and the per-connection handle the proxy holds. Opening a
//! connection costs one read-locked map lookup (the four counters of a label set are cached
//! together); bytes are added when the connection closes, never per read.
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::labels::ConnectionLabels;
use crate::flow::ByteCount;

/// The counters of one label set, shared by every connection with those labels.
#[derive(Debug)]
struct TcpCounters {
    opened: Counter,
    closed: Counter,
    received: Counter,
    sent: Counter,
}

/// `istio_tcp_*` families plus a cache from label set to its four counters.
#[derive(Debug, Default)]
pub(super) struct TcpMetrics {
    opened: Family<ConnectionLabels, Counter>,
    closed: Family<ConnectionLabels, Counter>,
    received: Family<ConnectionLabels, Counter>,
    sent: Family<ConnectionLabels, Counter>,
    cache: RwLock<HashMap<ConnectionLabels, Arc<TcpCounters>>>,
}

impl TcpMetrics {
    /// Registers under Istio's exact names (prometheus-client appends `_total` to counters).
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "istio_tcp_connections_opened",
            "The total number of TCP connections opened",
            self.opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "The total number of TCP connections closed",
            self.closed.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "The size of total bytes received during request in case of a TCP connection",
            self.received.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "The size of total bytes sent during response in case of a TCP connection",
            self.sent.clone(),
        );
    }

    /// Counts a connection as opened and returns the handle that records its bytes and close.
    pub(super) fn open(&self, labels: &ConnectionLabels) -> ConnectionMetrics {
        let counters = self.counters(labels);
        counters.opened.inc();
        ConnectionMetrics {
            counters,
            reported: ByteCount::default(),
        }
    }

    fn counters(&self, labels: &ConnectionLabels) -> Arc<TcpCounters> {
        if let Some(c) = read(&self.cache).get(labels) {
            return c.clone();
        }
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .entry(labels.clone())
            .or_insert_with(|| {
                Arc::new(TcpCounters {
                    opened: self.opened.get_or_create_owned(labels),
                    closed: self.closed.get_or_create_owned(labels),
                    received: self.received.get_or_create_owned(labels),
                    sent: self.sent.get_or_create_owned(labels),
                })
            })
            .clone()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Held for the life of one connection; dropping it counts the connection as closed.
#[derive(Debug)]
pub struct ConnectionMetrics {
    counters: Arc<TcpCounters>,
    reported: ByteCount,
}

impl ConnectionMetrics {
    /// Adds the bytes moved since the previous call; `total` is the connection's running total.
    /// Called at close, or periodically for long-lived connections.
    pub fn record(&mut self, total: ByteCount) {
        let received = total.received.saturating_sub(self.reported.received);
        let sent = total.sent.saturating_sub(self.reported.sent);
        if received > 0 {
            self.counters.received.inc_by(received);
        }
        if sent > 0 {
            self.counters.sent.inc_by(sent);
        }
        self.reported = total;
    }
}

impl Drop for ConnectionMetrics {
    fn drop(&mut self) {
        self.counters.closed.inc();
    }
}
