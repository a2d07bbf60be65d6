//! The one rustls crypto provider of the agent; a leaf module so `identity` (CA self-check) and `tls`
//! (every config and verifier) share it without importing each other.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The single crypto provider (ring) every config is built with, so no process-wide default is needed.
///
/// AES-128-GCM with SHA-256 comes first, as in Envoy's default list: its handshake hashing uses the
/// CPU's SHA extensions, where ring computes SHA-384 in plain code (6% of the proxies' CPU on the
/// new-connection benchmark went to SHA-512 blocks).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites.sort_by_key(|suite| {
                suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
            });
            Arc::new(provider)
        })
        .clone()
}
