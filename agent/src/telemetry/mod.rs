//! Telemetry: the proxy's single entry point for observability. A connection is opened
//! (metrics + tracker) when forwarding starts and reported (bytes, close, access log) when its
//! [`ObservedConnection`] drops, so aborted tasks are reported too.
use std::{fmt::Display, sync::Arc, time::SystemTime};

use crate::{
    accesslog::{AccessLog, AccessLogEntry},
    connections::{ConnectionGuard, ConnectionTracker, Counted},
    flow::{ByteCount, ConnectionInfo},
    metrics::{ConnectionLabels, ConnectionMetrics, Metrics, RefusalReason, ResponseFlags},
};

/// Metrics, live connections and access log of one agent.
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub connections: Arc<ConnectionTracker>,
    pub access_log: Option<AccessLog>,
}

impl Telemetry {
    pub fn new(metrics: Arc<Metrics>, access_log: Option<AccessLog>) -> Self {
        Self {
            metrics,
            connections: Arc::default(),
            access_log,
        }
    }

    /// A connection the proxy is about to forward (upstream connected, handshake done).
    pub fn open(self: &Arc<Self>, info: ConnectionInfo) -> ObservedConnection {
        let metrics = self
            .metrics
            .open_connection(&ConnectionLabels::new(&info, ResponseFlags::None));
        ObservedConnection {
            telemetry: self.clone(),
            guard: self.connections.register(info),
            metrics,
            error: None,
        }
    }

    /// A connection closed without forwarding: counted in the Istio metrics with `reason`'s
    /// response flag, in `sockmesh_refused_connections_total`, and logged.
    pub fn refuse(&self, info: ConnectionInfo, reason: RefusalReason, error: impl Display) {
        let flags = reason.response_flags();
        self.metrics
            .connection_refused(&ConnectionLabels::new(&info, flags), reason, info.mode);
        if let Some(log) = &self.access_log {
            log.record(AccessLogEntry {
                end: SystemTime::now(),
                id: None,
                info: Arc::new(info),
                bytes: ByteCount::default(),
                duration: std::time::Duration::ZERO,
                response_flags: flags,
                reason: Some(reason),
                error: Some(error.to_string()),
            });
        }
    }
}

/// A forwarded connection; dropping it records bytes, counts the close, writes the access-log
/// line and removes it from `/connections`.
pub struct ObservedConnection {
    telemetry: Arc<Telemetry>,
    guard: ConnectionGuard,
    metrics: ConnectionMetrics,
    error: Option<String>,
}

impl ObservedConnection {
    /// Wraps the source-side (downstream) stream so bytes are counted as they move.
    pub fn count<S>(&self, stream: S) -> Counted<S> {
        self.guard.count(stream)
    }

    /// Wraps the destination-side stream instead (for forwarders whose source side is framed):
    /// bytes written to it were received from the source, bytes read from it were sent back.
    pub fn count_destination<S>(&self, stream: S) -> Counted<S> {
        self.guard.count_destination(stream)
    }

    /// Records that forwarding ended with an error (shown in the access log).
    pub fn set_error(&mut self, error: impl Display) {
        self.error = Some(error.to_string());
    }

    /// Pushes the bytes moved so far into the metrics; for a periodic flush of long connections.
    pub fn flush_metrics(&mut self) {
        self.metrics.record(self.guard.bytes());
    }

    pub fn id(&self) -> u64 {
        self.guard.id()
    }

    /// Bytes moved so far.
    pub fn bytes(&self) -> ByteCount {
        self.guard.bytes()
    }
}

impl Drop for ObservedConnection {
    fn drop(&mut self) {
        let bytes = self.guard.bytes();
        self.metrics.record(bytes);
        if let Some(log) = &self.telemetry.access_log {
            log.record(AccessLogEntry {
                end: SystemTime::now(),
                id: Some(self.guard.id()),
                info: self.guard.info().clone(),
                bytes,
                duration: self.guard.elapsed(),
                response_flags: ResponseFlags::None,
                reason: None,
                error: self.error.take(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
