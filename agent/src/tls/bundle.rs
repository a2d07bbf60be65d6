//! The mesh trust bundle: every root a mesh peer may chain to, swappable while the proxy runs.
//!
//! A root rotation goes old root → both roots → new root. The bundle is read by the mesh verifiers
//! at each handshake (never copied into a config), so a new bundle applies to the next handshake and
//! an open connection, already verified, is untouched. Each generation carries its prebuilt webpki
//! client verifier, so inbound handshakes do not rebuild one.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};

use crate::crypto::provider;

/// One set of roots and the client verifier built from it.
#[derive(Debug)]
pub struct BundleGeneration {
    roots: Arc<RootCertStore>,
    der: Vec<CertificateDer<'static>>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

impl BundleGeneration {
    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    pub(crate) fn client_verifier(&self) -> &Arc<dyn ClientCertVerifier> {
        &self.client_verifier
    }
}

/// Why a set of roots cannot be a trust bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("trust bundle has no root")]
    Empty,
    #[error("trust bundle root {index} is not a usable trust anchor: {source}")]
    BadRoot { index: usize, source: rustls::Error },
    #[error("building the client verifier for the trust bundle: {0}")]
    Verifier(#[from] VerifierBuilderError),
}

/// The live bundle; cheap to clone (all clones see the same swaps).
#[derive(Debug, Clone)]
pub struct TrustBundle {
    current: Arc<ArcSwap<BundleGeneration>>,
}

impl TrustBundle {
    pub fn new(roots: Arc<RootCertStore>) -> Result<Self, BundleError> {
        let generation = generation(roots, Vec::new())?;
        Ok(TrustBundle {
            current: Arc::new(ArcSwap::from_pointee(generation)),
        })
    }

    /// The bundle as of now; hold it for one verification.
    pub fn current(&self) -> Arc<BundleGeneration> {
        self.current.load_full()
    }

    /// Replaces the bundle by exactly `roots` (DER) unless it already is that set; returns whether
    /// it changed. New handshakes use the new roots, open connections are untouched.
    pub fn replace(&self, roots: &[CertificateDer<'static>]) -> Result<bool, BundleError> {
        let current = self.current.load();
        if same_set(&current.der, roots) {
            return Ok(false);
        }
        let mut store = RootCertStore::empty();
        for (index, root) in roots.iter().enumerate() {
            store
                .add(root.clone())
                .map_err(|source| BundleError::BadRoot { index, source })?;
        }
        let next = generation(Arc::new(store), roots.to_vec())?;
        self.current.store(Arc::new(next));
        Ok(true)
    }
}

fn same_set(a: &[CertificateDer<'static>], b: &[CertificateDer<'static>]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

fn generation(
    roots: Arc<RootCertStore>,
    der: Vec<CertificateDer<'static>>,
) -> Result<BundleGeneration, BundleError> {
    if roots.is_empty() {
        return Err(BundleError::Empty);
    }
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build()?;
    Ok(BundleGeneration {
        roots,
        der,
        client_verifier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_pki::TestCa;

    #[test]
    fn replace_swaps_only_on_a_different_set() {
        let (a, b) = (TestCa::new(), TestCa::new());
        let bundle = TrustBundle::new(a.roots()).unwrap();
        let both = [a.root_der(), b.root_der()];
        assert!(bundle.replace(&both).unwrap());
        assert_eq!(bundle.current().roots().len(), 2);
        assert!(!bundle.replace(&[b.root_der(), a.root_der()]).unwrap());
        assert!(bundle.replace(&[b.root_der()]).unwrap());
        assert_eq!(bundle.current().roots().len(), 1);
        assert!(matches!(bundle.replace(&[]), Err(BundleError::Empty)));
        assert_eq!(
            bundle.current().roots().len(),
            1,
            "a bad bundle keeps the last good one"
        );
    }
}
