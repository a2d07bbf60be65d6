//! TLS for the node proxy: the mesh (ISTIO_MUTUAL) profile, origination (SIMPLE/MUTUAL) and
//! classification of inbound bytes.

mod client_hello;
pub mod detect;
pub mod mesh;
pub mod origination;
mod verify;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The single crypto provider (ring) every config is built with, so no process-wide default is needed.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
