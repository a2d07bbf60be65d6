//! One stream's bytes over a pooled connection: the app's bytes leave as `Data` frames and its
//! EOF as `End`; incoming `Data` is written to the app and `End` half-closes it. The connection can
//! carry the next stream only when both ways ended with `End`.
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{self, HEADER, Kind};
use crate::proxy::io::buffers::AdaptiveBuffer;

/// Relays until both directions ended. `Ok` means the stream ended cleanly both ways and `conn` is
/// ready for the next stream; on an error the connection must be dropped. Buffers adapt to what
/// the stream moves: under bulk a `Data` frame with its header is 64 KiB, four full TLS records
/// that rustls seals and writes at once (a larger frame would cost a second, tiny record).
pub async fn relay<C, A>(conn: &mut C, app: &mut A) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    let (mut conn_r, mut conn_w) = tokio::io::split(conn);
    let (mut app_r, mut app_w) = tokio::io::split(app);
    let outgoing = async {
        let mut buffer = AdaptiveBuffer::new();
        loop {
            let buf = buffer.get();
            let n = match app_r.read(&mut buf[HEADER..]).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = frame::write_empty(&mut conn_w, Kind::Reset).await;
                    return Err(e);
                }
            };
            if n == 0 {
                return frame::write_empty(&mut conn_w, Kind::End).await;
            }
            let filled = HEADER + n == buf.len();
            frame::encode_header(Kind::Data, n, buf);
            conn_w.write_all(&buf[..HEADER + n]).await?;
            conn_w.flush().await?;
            buffer.read(n, filled);
        }
    };
    let incoming = async {
        let mut buffer = AdaptiveBuffer::new();
        loop {
            match frame::read_header(&mut conn_r).await? {
                Some((Kind::Data, len)) => {
                    // Whatever part of the frame has been decrypted goes on at once, so the
                    // app's socket is written while the rest of the frame is still arriving.
                    let mut left = len;
                    while left > 0 {
                        let buf = buffer.get();
                        let room = left.min(buf.len());
                        let n = conn_r.read(&mut buf[..room]).await?;
                        if n == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "pooled connection closed inside a frame",
                            ));
                        }
                        let filled = n == buf.len();
                        app_w.write_all(&buf[..n]).await?;
                        buffer.read(n, filled);
                        left -= n;
                    }
                }
                Some((Kind::End, 0)) => {
                    // The app may already have closed both ways; its half-close is then moot.
                    let _ = app_w.shutdown().await;
                    return Ok(());
                }
                Some((Kind::Reset, _)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "the peer proxy reset the stream",
                    ));
                }
                Some((kind, len)) => {
                    return Err(frame::invalid(format!(
                        "unexpected {kind:?} frame ({len} bytes) inside a stream"
                    )));
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "pooled connection closed inside a stream",
                    ));
                }
            }
        }
    };
    tokio::try_join!(outgoing, incoming).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two proxies joined by `conn`, each with its app at the other end of a duplex pipe.
    #[tokio::test]
    async fn streams_follow_each_other_on_one_connection() {
        let (mut client_conn, mut server_conn) = tokio::io::duplex(1 << 20);
        for round in 0..3u8 {
            let (mut client_app, mut client_proxy_side) = tokio::io::duplex(1 << 20);
            let (mut server_app, mut server_proxy_side) = tokio::io::duplex(1 << 20);
            let request = vec![round; 200_000];
            let app_client = async {
                client_app.write_all(&request).await.unwrap();
                client_app.shutdown().await.unwrap();
                let mut answer = Vec::new();
                client_app.read_to_end(&mut answer).await.unwrap();
                answer
            };
            let app_server = async {
                let mut got = Vec::new();
                server_app.read_to_end(&mut got).await.unwrap();
                server_app.write_all(b"done").await.unwrap();
                server_app.shutdown().await.unwrap();
                got
            };
            let (answer, got, a, b) = tokio::join!(
                app_client,
                app_server,
                relay(&mut client_conn, &mut client_proxy_side),
                relay(&mut server_conn, &mut server_proxy_side),
            );
            a.unwrap();
            b.unwrap();
            assert_eq!(answer, b"done");
            assert_eq!(got, request);
        }
    }

    #[tokio::test]
    async fn a_reset_ends_the_stream_with_an_error() {
        let (mut conn, mut peer) = tokio::io::duplex(1024);
        let (_app, mut proxy_side) = tokio::io::duplex(1024);
        frame::write_empty(&mut peer, Kind::Reset).await.unwrap();
        let e = relay(&mut conn, &mut proxy_side).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn a_vanished_connection_is_an_error_not_an_end() {
        let (mut conn, peer) = tokio::io::duplex(1024);
        let (_app, mut proxy_side) = tokio::io::duplex(1024);
        drop(peer);
        let e = relay(&mut conn, &mut proxy_side).await.unwrap_err();
        assert!(matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe
        ));
    }
}
