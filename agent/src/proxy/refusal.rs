//! Why a connection (or a tunnel stream) was not forwarded, and the one place where that is
//! recorded: the log line, the reset the client sees, the metrics and the access log.
use tokio::net::TcpStream;
use tracing::warn;

use super::io::forward::reset;
use crate::{
    flow::ConnectionInfo, log_throttle::Throttle, log_throttled, metrics::RefusalReason,
    telemetry::Telemetry,
};

/// Refusals a client can cause at will are logged at most this often a second; the metrics and
/// the access log still count every one.
static REFUSED: Throttle = Throttle::new("connection refused", 20);

/// A stage's "no": the reason (a metric label and response flag) and what exactly went wrong.
#[derive(Debug)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub error: String,
}

impl Refusal {
    pub fn new(reason: RefusalReason, error: impl std::fmt::Display) -> Self {
        Self {
            reason,
            error: error.to_string(),
        }
    }
}

/// A refusal of one connection, with what is known about it and, while the proxy still holds it,
/// the client's socket, so the client sees a reset rather than a clean close.
#[derive(Debug)]
pub struct Refused {
    pub info: Box<ConnectionInfo>,
    pub refusal: Refusal,
    pub downstream: Option<TcpStream>,
}

impl Refused {
    /// A refusal whose client socket is already gone (e.g. consumed by a failed TLS handshake) or
    /// is not a socket of its own (a tunnel stream, refused with a frame).
    pub fn new(info: ConnectionInfo, refusal: Refusal) -> Self {
        Self {
            info: Box::new(info),
            refusal,
            downstream: None,
        }
    }

    /// The same refusal, answered with a reset on `downstream`.
    pub fn reset(mut self, downstream: TcpStream) -> Self {
        self.downstream = Some(downstream);
        self
    }
}

/// Records a refusal everywhere it is reported: the only function that does so. The access log
/// has its own bounded queue (lines it cannot keep up with are dropped and counted).
pub fn record(telemetry: &Telemetry, refused: Refused) {
    let Refused {
        info,
        refusal: Refusal { reason, error },
        downstream,
    } = refused;
    log_throttled!(
        REFUSED,
        warn!(
            direction = info.direction.as_str(),
            src = %info.source.addr,
            dst = ?info.destination.original,
            reason = reason.as_str(),
            %error,
            "connection refused"
        )
    );
    if let Some(downstream) = &downstream {
        reset(downstream);
    }
    telemetry.refuse(*info, reason, error);
}
