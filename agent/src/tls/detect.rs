//! Classifies an inbound connection from its first bytes without consuming them, so the proxy can
//! terminate mesh mTLS or pass everything else through untouched.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout_at};

use super::client_hello::{ClientHello, Parsed, parse};
use super::mesh::MESH_ALPN;

/// How long a client may take to send its first flight.
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// One full TLS record; a larger ClientHello is not something a mesh peer sends.
const MAX_PEEK: usize = (1 << 14) + 5;
/// First peek size; enough for every ClientHello a mesh peer sends.
const FIRST_PEEK: usize = 2048;
const MIN_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// A ClientHello offering the mesh ALPN: terminate with the destination's mesh identity.
    MeshTls {
        sni: Option<String>,
    },
    /// TLS that is not mesh mTLS (the application's own, or unparseable): never mesh-terminated.
    OtherTls {
        sni: Option<String>,
    },
    Plaintext,
    /// Nothing arrived before the timeout or EOF; server-first protocols look like this and are
    /// to be treated as plaintext.
    Empty,
}

impl Detected {
    fn from_hello(hello: ClientHello) -> Self {
        let mesh = hello.alpn.iter().any(|p| MESH_ALPN.contains(&p.as_slice()));
        if mesh {
            Detected::MeshTls { sni: hello.sni }
        } else {
            Detected::OtherTls { sni: hello.sni }
        }
    }
}

/// Verdict on the first bytes of a connection seen so far, or `None` when a ClientHello is still
/// incomplete. Pure (no I/O): [`detect`] calls it after every peek, and the `client_hello` fuzz
/// target (`fuzz/`) feeds it arbitrary bytes, which must never panic.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    match parse(buf) {
        Parsed::NeedMore => None,
        Parsed::NotTls => Some(Detected::Plaintext),
        Parsed::Malformed => Some(Detected::OtherTls { sni: None }),
        Parsed::Hello(hello) => Some(Detected::from_hello(hello)),
    }
}

/// Verdict when no more bytes will be looked at: a partial TLS record is not mesh mTLS.
fn incomplete(seen: usize) -> Detected {
    if seen == 0 {
        Detected::Empty
    } else {
        Detected::OtherTls { sni: None }
    }
}

/// Peeks (never reads) until the first bytes are classified, the ClientHello is complete, or
/// `timeout` passes. A ClientHello split across TCP segments is awaited by re-peeking.
pub async fn detect(stream: &TcpStream, timeout: Duration) -> io::Result<Detected> {
    let deadline = Instant::now() + timeout;
    // Most ClientHellos fit in a couple of KiB: start small, grow to a full record only if needed.
    let mut buf = vec![0u8; FIRST_PEEK];
    let mut seen = 0;
    let mut pause = MIN_PAUSE;
    loop {
        let Ok(peeked) = timeout_at(deadline, stream.peek(&mut buf)).await else {
            return Ok(incomplete(seen));
        };
        let n = peeked?;
        if n == 0 {
            return Ok(Detected::Empty);
        }
        if let Some(detected) = classify(&buf[..n]) {
            return Ok(detected);
        }
        if n == buf.len() {
            if buf.len() == MAX_PEEK {
                return Ok(incomplete(n));
            }
            buf.resize(MAX_PEEK, 0);
            continue;
        }
        if n == seen {
            // peek returns at once while any bytes are queued, so the rest is awaited by polling.
            if timeout_at(deadline, sleep(pause)).await.is_err() {
                return Ok(incomplete(n));
            }
            pause = (pause * 2).min(MAX_PAUSE);
        } else {
            pause = MIN_PAUSE;
        }
        seen = n;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::tls::client_hello::tests::rustls_client_hello;

    const SNI: &str = "outbound_.8000_._.httpbin.test2.svc.cluster.local";

    /// Runs `detect` on the server end while the client writes `chunks` with pauses in between.
    async fn detect_with(
        chunks: Vec<Vec<u8>>,
        gap: Duration,
        close: bool,
        timeout: Duration,
    ) -> Detected {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            for chunk in chunks {
                tcp.write_all(&chunk).await.unwrap();
                tokio::time::sleep(gap).await;
            }
            if !close {
                tokio::time::sleep(timeout * 2).await;
            }
        });
        let (server, _) = listener.accept().await.unwrap();
        let detected = detect(&server, timeout).await.unwrap();
        client.abort();
        detected
    }

    #[tokio::test]
    async fn mesh_hello_in_one_segment() {
        let hello = rustls_client_hello(SNI, &MESH_ALPN);
        let detected =
            detect_with(vec![hello], Duration::ZERO, false, DEFAULT_DETECT_TIMEOUT).await;
        assert_eq!(
            detected,
            Detected::MeshTls {
                sni: Some(SNI.into())
            }
        );
    }

    #[tokio::test]
    async fn mesh_hello_split_across_segments() {
        let hello = rustls_client_hello(SNI, &[b"istio"]);
        let chunks = vec![
            hello[..3].to_vec(),
            hello[3..100].to_vec(),
            hello[100..].to_vec(),
        ];
        let detected = detect_with(
            chunks,
            Duration::from_millis(30),
            false,
            DEFAULT_DETECT_TIMEOUT,
        )
        .await;
        assert_eq!(
            detected,
            Detected::MeshTls {
                sni: Some(SNI.into())
            }
        );
    }

    #[tokio::test]
    async fn app_tls_and_plaintext() {
        let hello = rustls_client_hello("api.example.com", &[b"h2"]);
        let detected =
            detect_with(vec![hello], Duration::ZERO, false, DEFAULT_DETECT_TIMEOUT).await;
        assert_eq!(
            detected,
            Detected::OtherTls {
                sni: Some("api.example.com".into())
            }
        );
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let detected = detect_with(vec![get], Duration::ZERO, false, DEFAULT_DETECT_TIMEOUT).await;
        assert_eq!(detected, Detected::Plaintext);
    }

    #[tokio::test]
    async fn silent_closed_and_stalled_clients() {
        let short = Duration::from_millis(150);
        assert_eq!(
            detect_with(vec![], Duration::ZERO, false, short).await,
            Detected::Empty
        );
        assert_eq!(
            detect_with(vec![], Duration::ZERO, true, short).await,
            Detected::Empty
        );
        let hello = rustls_client_hello(SNI, &MESH_ALPN);
        let stalled = vec![hello[..50].to_vec()];
        assert_eq!(
            detect_with(stalled, Duration::ZERO, false, short).await,
            Detected::OtherTls { sni: None }
        );
    }
}
