//! Hostile clients from a pod outside the mesh against a STRICT port: plaintext, garbage, and
//! mTLS with certificates the mesh must refuse (plus one it must accept, so the zeros mean
//! something). TLS kinds offer Istio's ALPN, so the agent takes them for mesh mTLS on a
//! connection of their own, or (`--pooled`) sockmesh's pooled ALPN and then open a stream on it
//! with the pooled framing (`agent/src/proxy/pooled/frame.rs`): the two inbound paths.
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use serde_json::json;

use super::end_kind;

const TIMEOUT: Duration = Duration::from_secs(3);
const MESH_ALPN: [&[u8]; 2] = [b"istio-peer-exchange", b"istio"];
const POOLED_ALPN: &[u8] = b"sockmesh-pooled/1";
/// Pooled frame kinds (a 4-byte header: kind, 24-bit big-endian length; then the payload).
const FRAME_DATA: u8 = 0;
const FRAME_OPEN: u8 = 1;
const FRAME_ACCEPT: u8 = 2;
const GARBAGE_LEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    Plaintext,
    Garbage,
    ForeignCa,
    Expired,
    NotYetValid,
    WrongTrustDomain,
    NoEku,
    /// A valid mesh certificate: the control row, it must get through.
    MeshCert,
}

impl Attack {
    pub const ALL: [Attack; 8] = [
        Attack::Plaintext,
        Attack::Garbage,
        Attack::ForeignCa,
        Attack::Expired,
        Attack::NotYetValid,
        Attack::WrongTrustDomain,
        Attack::NoEku,
        Attack::MeshCert,
    ];

    /// The name on the command line, in file names and in the table's row ids.
    pub fn id(self) -> &'static str {
        match self {
            Attack::Plaintext => "plaintext",
            Attack::Garbage => "garbage",
            Attack::ForeignCa => "foreign-ca",
            Attack::Expired => "expired",
            Attack::NotYetValid => "not-yet-valid",
            Attack::WrongTrustDomain => "wrong-trust-domain",
            Attack::NoEku => "no-eku",
            Attack::MeshCert => "mesh-cert",
        }
    }

    pub fn uses_tls(self) -> bool {
        !matches!(self, Attack::Plaintext | Attack::Garbage)
    }
}

pub fn run(
    addr: SocketAddr,
    kind: Attack,
    count: usize,
    cert_dir: &Path,
    pooled: bool,
) -> Result<()> {
    let tls = if kind.uses_tls() {
        Some(Arc::new(client_config(cert_dir, kind.id(), pooled)?))
    } else {
        None
    };
    let (mut handshakes, mut replies) = (0usize, 0usize);
    let mut errors: BTreeMap<&'static str, usize> = BTreeMap::new();
    for attempt in 0..count {
        let outcome = TcpStream::connect_timeout(&addr, TIMEOUT).and_then(|conn| {
            conn.set_read_timeout(Some(TIMEOUT))?;
            conn.set_write_timeout(Some(TIMEOUT))?;
            match (kind, &tls) {
                (Attack::Plaintext, _) => reply(conn, b"hello\n"),
                (Attack::Garbage, _) => reply(conn, &garbage(attempt)),
                (_, Some(config)) => {
                    let mut session = ClientConnection::new(
                        config.clone(),
                        ServerName::try_from("soak.attacker").expect("valid name"),
                    )
                    .map_err(io::Error::other)?;
                    let mut conn = conn;
                    while session.is_handshaking() {
                        session.complete_io(&mut conn)?;
                    }
                    handshakes += 1;
                    let stream = StreamOwned::new(session, conn);
                    if pooled {
                        pooled_reply(stream, addr.port())
                    } else {
                        reply(stream, b"hello\n")
                    }
                }
                (_, None) => unreachable!("TLS kinds have a config"),
            }
        });
        match outcome {
            Ok(()) => replies += 1,
            Err(error) => *errors.entry(end_kind(&error)).or_default() += 1,
        }
    }
    println!(
        "{}",
        json!({ "attempts": count, "handshakes": handshakes, "replies": replies, "errors": errors })
    );
    Ok(())
}

/// Sends `msg` and waits for a line back: a reply means the app answered.
fn reply(mut conn: impl Read + Write, msg: &[u8]) -> io::Result<()> {
    conn.write_all(msg)?;
    conn.flush()?;
    let mut line = String::new();
    if BufReader::new(conn).read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Opens a stream to `port` on a pooled connection, sends a line in a data frame and waits for
/// a data frame back.
fn pooled_reply(mut conn: impl Read + Write, port: u16) -> io::Result<()> {
    let [hi, lo] = port.to_be_bytes();
    conn.write_all(&[FRAME_OPEN, 0, 0, 2, hi, lo])?;
    conn.flush()?;
    let mut header = [0u8; 4];
    conn.read_exact(&mut header)?;
    if header[0] != FRAME_ACCEPT {
        return Err(io::Error::other(format!("stream not accepted: {header:?}")));
    }
    conn.write_all(&[FRAME_DATA, 0, 0, 6])?;
    conn.write_all(b"hello\n")?;
    conn.flush()?;
    conn.read_exact(&mut header)?;
    match header[0] {
        FRAME_DATA => Ok(()),
        _ => Err(io::Error::other(format!("no data back: {header:?}"))),
    }
}

/// Bytes no protocol starts with; a different sequence per attempt.
fn garbage(attempt: usize) -> Vec<u8> {
    let mut state = attempt as u64 ^ 0x9e37_79b9_7f4a_7c15;
    (0..GARBAGE_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn client_config(dir: &Path, stem: &str, pooled: bool) -> Result<ClientConfig> {
    let chain_path = dir.join(format!("{stem}.pem"));
    let chain = CertificateDer::pem_file_iter(&chain_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", chain_path.display()))?;
    let key_path = dir.join(format!("{stem}-key.pem"));
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(chain, key)?;
    // As sockmesh's own client: the pooled ALPN first (the server prefers it), Istio's after,
    // which is what makes the agent take the connection for mesh mTLS at all.
    let pooled = pooled.then_some(POOLED_ALPN);
    config.alpn_protocols = pooled
        .into_iter()
        .chain(MESH_ALPN)
        .map(<[u8]>::to_vec)
        .collect();
    Ok(config)
}

/// The attacker does not care who the server is; only whether the server lets it in.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
