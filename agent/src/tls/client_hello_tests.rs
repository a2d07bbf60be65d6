use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::*;
use crate::crypto::provider;
use crate::tls::mesh::MESH_ALPN;

/// The bytes rustls sends as its first flight (one ClientHello record).
pub(crate) fn rustls_client_hello(sni: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// Re-frames a single-record hello into two records split at `at` bytes of handshake payload.
fn split_into_two_records(hello: &[u8], at: usize) -> Vec<u8> {
    let payload = &hello[RECORD_HEADER_LEN..];
    let (a, b) = payload.split_at(at);
    let mut out = Vec::new();
    for part in [a, b] {
        out.extend_from_slice(&hello[..3]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn mesh_hello() -> Vec<u8> {
    rustls_client_hello(
        "outbound_.8000_._.httpbin.test2.svc.cluster.local",
        &MESH_ALPN,
    )
}

#[test]
fn parses_real_rustls_hello() {
    let Parsed::Hello(hello) = parse(&mesh_hello()) else {
        panic!("not parsed")
    };
    assert_eq!(
        hello.sni.as_deref(),
        Some("outbound_.8000_._.httpbin.test2.svc.cluster.local")
    );
    assert_eq!(
        hello.alpn,
        vec![b"istio-peer-exchange".to_vec(), b"istio".to_vec()]
    );

    let Parsed::Hello(plain) = parse(&rustls_client_hello("example.com", &[])) else {
        panic!("not parsed")
    };
    assert_eq!(plain.sni.as_deref(), Some("example.com"));
    assert!(plain.alpn.is_empty());
}

#[test]
fn every_prefix_needs_more() {
    let hello = mesh_hello();
    for n in 0..hello.len() {
        assert_eq!(parse(&hello[..n]), Parsed::NeedMore, "prefix of {n} bytes");
    }
}

#[test]
fn hello_split_across_records() {
    let hello = mesh_hello();
    let payload_len = hello.len() - RECORD_HEADER_LEN;
    for at in [1, 3, 4, 40, payload_len / 2, payload_len - 1] {
        let split = split_into_two_records(&hello, at);
        assert!(
            matches!(parse(&split), Parsed::Hello(ref h) if h.alpn.len() == 2),
            "split at {at}"
        );
        let first_record_end = RECORD_HEADER_LEN + at;
        assert_eq!(
            parse(&split[..first_record_end]),
            Parsed::NeedMore,
            "split at {at}"
        );
    }
}

#[test]
fn plaintext_and_malformed() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::NotTls);
    assert_eq!(parse(b"\x16\x01"), Parsed::NotTls);
    assert_eq!(parse(b"\x16\x03\x01\x00\x00"), Parsed::Malformed);
    assert_eq!(parse(b"\x16\x03\x01\xff\xff"), Parsed::Malformed);
    assert_eq!(
        parse(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"),
        Parsed::Malformed
    );
    assert_eq!(
        parse(b"\x16\x03\x01\x00\x04\x01\x00\x00\x00"),
        Parsed::Malformed
    );
    let mut hello = mesh_hello();
    let at = RECORD_HEADER_LEN + 1;
    let body_len = u32::from_be_bytes([0, hello[at], hello[at + 1], hello[at + 2]]) - 10;
    hello[at..at + 3].copy_from_slice(&body_len.to_be_bytes()[1..]);
    assert_eq!(
        parse(&hello),
        Parsed::Malformed,
        "inner lengths no longer add up"
    );
}

/// xorshift64*: deterministic randomness without a dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        let len = (next(&mut rng) % 600) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next(&mut rng) as u8).collect();
        if len > 2 && next(&mut rng).is_multiple_of(2) {
            buf[0] = CONTENT_HANDSHAKE;
            buf[1] = 3;
        }
        let _ = parse(&buf);
    }
    let hello = mesh_hello();
    for _ in 0..20_000 {
        let mut buf = hello.clone();
        for _ in 0..1 + next(&mut rng) % 4 {
            let i = (next(&mut rng) as usize) % buf.len();
            buf[i] = next(&mut rng) as u8;
        }
        let cut = (next(&mut rng) as usize) % (buf.len() + 1);
        let _ = parse(&buf[..cut]);
        let _ = parse(&buf);
    }
}
