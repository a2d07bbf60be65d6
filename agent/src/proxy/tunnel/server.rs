//! The server side of a tunnel: streams, one after another, to ports of the pod the connection
//! reached. The target address is always that pod's (the `Open` frame names only a port), so a
//! tunnel can never be used to reach anything else. What a stream may reach is decided by the
//! opener the caller hands in (inbound admission); this module only speaks the protocol.
use std::{future::Future, io, pin::Pin, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::watch,
};
use tracing::debug;

use super::{
    frame::{self, Kind},
    relay::relay,
};
use crate::{
    proxy::io::forward::{finish, observe},
    telemetry::ObservedConnection,
};

/// An idle tunnel is closed after this long without a new stream; clients close theirs sooner
/// (see `pool::IDLE_TIMEOUT`).
const SERVER_IDLE: Duration = Duration::from_secs(60);

/// A stream the opener admitted: the app connection, its telemetry, and what ends it early when
/// the admission is revoked (a policy change), with the reason.
pub struct Opened<'a> {
    pub app: TcpStream,
    pub observed: ObservedConnection,
    pub revoked: Pin<Box<dyn Future<Output = String> + Send + 'a>>,
}

/// Serves streams until the client closes the connection, a stream fails, or the agent drains.
/// `open` is called with each stream's target port and either admits it or says why not (sent
/// back in a `Refuse` frame; the opener records the refusal).
pub async fn serve<'a, C, O, F>(
    mut conn: C,
    idle: Duration,
    mut draining: watch::Receiver<bool>,
    mut open: O,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    O: FnMut(u16) -> F,
    F: Future<Output = Result<Opened<'a>, String>>,
{
    loop {
        if *draining.borrow() {
            return;
        }
        let next = tokio::select! {
            next = tokio::time::timeout(SERVER_IDLE, frame::read_open(&mut conn)) => next,
            _ = draining.changed() => return,
        };
        let port = match next {
            Ok(Ok(Some(port))) => port,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => return debug!(error = %e, "pooled connection closed"),
        };
        let carried_on = match open(port).await {
            Ok(opened) => serve_stream(&mut conn, idle, opened).await,
            Err(why) => frame::write_refuse(&mut conn, &why).await.is_ok(),
        };
        if !carried_on {
            return;
        }
    }
}

/// Relays one admitted stream; false when the connection cannot carry another. A stream that
/// ends abnormally (the tunnel broke, the client reset, the admission was revoked) resets the app.
async fn serve_stream<C>(conn: &mut C, idle: Duration, opened: Opened<'_>) -> bool
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let Opened {
        app,
        mut observed,
        revoked,
    } = opened;
    if frame::write_empty(conn, Kind::Accept).await.is_err() {
        return false;
    }
    let mut counted = observed.count_destination(app);
    let relayed = observe(&mut observed, idle, async {
        tokio::select! {
            result = relay(conn, &mut counted) => result,
            reason = revoked => Err(io::Error::new(io::ErrorKind::PermissionDenied, reason)),
        }
    })
    .await;
    finish(&relayed, counted.get_ref(), None);
    relayed.is_ok()
}
