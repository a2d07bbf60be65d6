//! Certificates for the handshake tests, made here rather than by `identity` so that `tls` does not
//! import it: a mesh root (optionally with an intermediate) and leaves with any SPIFFE ID, EKUs and
//! validity, including the ones the real issuer never makes (no EKU, wrong EKU, foreign domain).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::spiffe::SpiffeId;

/// What a workload presents: its ID, the chain to serve (leaf first) and the leaf key.
pub(crate) struct Leaf {
    pub id: SpiffeId,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A test mesh CA. Every one has the same subject name, as two independently created meshes would.
pub(crate) struct TestCa {
    signer: Issuer<'static, KeyPair>,
    /// Served after each leaf: the intermediate (if any), then the root.
    chain: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "cluster.local");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

impl TestCa {
    /// A root that signs leaves itself.
    pub(crate) fn new() -> Self {
        let key = key();
        let params = ca_params("test mesh root");
        let root = params.self_signed(&key).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(root.der().clone()).unwrap();
        TestCa {
            signer: Issuer::new(params, key),
            chain: vec![root.der().clone()],
            roots: Arc::new(roots),
        }
    }

    /// A root and an intermediate that signs the leaves.
    pub(crate) fn with_intermediate() -> Self {
        let root = TestCa::new();
        let key = key();
        let params = ca_params("test mesh intermediate");
        let intermediate = params.signed_by(&key, &root.signer).unwrap();
        TestCa {
            signer: Issuer::new(params, key),
            chain: vec![intermediate.der().clone(), root.chain[0].clone()],
            roots: root.roots,
        }
    }

    pub(crate) fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// The root certificate itself.
    pub(crate) fn root_der(&self) -> CertificateDer<'static> {
        self.chain[self.chain.len() - 1].clone()
    }

    /// A leaf for `id` with clientAuth and serverAuth, valid now, as the mesh issuer makes them.
    pub(crate) fn leaf(&self, id: &str) -> Leaf {
        self.leaf_ekus(
            id,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A leaf valid now with exactly these EKUs (none: no EKU extension at all).
    pub(crate) fn leaf_ekus(&self, id: &str, ekus: &[ExtendedKeyUsagePurpose]) -> Leaf {
        let now = OffsetDateTime::now_utc();
        self.leaf_with(
            id,
            ekus,
            (now - Duration::minutes(5), now + Duration::hours(1)),
        )
    }

    /// A leaf with exactly these EKUs (none: no EKU extension at all) and validity.
    pub(crate) fn leaf_with(
        &self,
        id: &str,
        ekus: &[ExtendedKeyUsagePurpose],
        (not_before, not_after): (OffsetDateTime, OffsetDateTime),
    ) -> Leaf {
        let key = key();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = ekus.to_vec();
        params.not_before = not_before;
        params.not_after = not_after;
        let leaf = params.signed_by(&key, &self.signer).unwrap();
        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.chain.iter().cloned());
        Leaf {
            id: id.parse().unwrap(),
            chain,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}
