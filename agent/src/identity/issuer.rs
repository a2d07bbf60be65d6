//! Issues workload certificates for SPIFFE identities, signed by the mesh CA.

use std::sync::Arc;
use std::time::{Duration as StdDuration, SystemTime};

use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ca::MeshCa;
use crate::spiffe::{SpiffeId, uri_sans};

/// Default workload certificate lifetime, as Istio.
pub const DEFAULT_TTL: StdDuration = StdDuration::from_secs(24 * 3600);
/// Tolerates peers whose clocks are slightly behind ours.
const BACKDATE: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("issuing certificate for {id}: {why}")]
    Sign { id: SpiffeId, why: String },
    #[error("certificate for {id} from the CA at {ca}: {why}")]
    Remote {
        id: SpiffeId,
        ca: String,
        why: String,
    },
    #[error("issuing certificate for {id}: mesh CA expires at {ca_not_after}, no validity left")]
    CaExpired {
        id: SpiffeId,
        ca_not_after: OffsetDateTime,
    },
}

/// What an admin endpoint shows about a workload certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub identity: String,
    /// Hex, colon-separated, as openssl prints it.
    pub serial: String,
    pub issuer: String,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    pub sans: Vec<String>,
}

/// A leaf key plus the chain to serve (leaf first, then `cert-chain.pem`).
pub struct WorkloadCert {
    pub id: SpiffeId,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub issued_at: SystemTime,
    pub not_after: SystemTime,
    pub info: CertInfo,
}

impl WorkloadCert {
    /// Half-life measured from issuance, not from the backdated `not_before`, so short test TTLs
    /// do not renew immediately.
    pub fn refresh_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.issued_at)
            .unwrap_or_default();
        self.issued_at + life / 2
    }

    pub fn is_expired(&self) -> bool {
        SystemTime::now() >= self.not_after
    }
}

/// Signs workload certificates with the local mesh CA.
#[derive(Clone)]
pub struct Issuer {
    ca: Arc<MeshCa>,
}

impl Issuer {
    pub fn new(ca: Arc<MeshCa>) -> Self {
        Issuer { ca }
    }

    pub fn ca(&self) -> &MeshCa {
        &self.ca
    }

    /// Issues a certificate valid from a little before now for `ttl`, capped at the CA's expiry.
    pub fn issue(&self, id: &SpiffeId, ttl: StdDuration) -> Result<WorkloadCert, IssueError> {
        let now = OffsetDateTime::now_utc();
        let not_after = (now + ttl).min(self.ca.not_after());
        if not_after <= now {
            return Err(IssueError::CaExpired {
                id: id.clone(),
                ca_not_after: self.ca.not_after(),
            });
        }
        self.issue_with_validity(id, now - BACKDATE, not_after)
    }

    /// Issues with an explicit validity window; tests use it to make already-expired certificates.
    pub fn issue_with_validity(
        &self,
        id: &SpiffeId,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<WorkloadCert, IssueError> {
        let sign_err = |why: String| IssueError::Sign {
            id: id.clone(),
            why,
        };
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| sign_err(e.to_string()))?;
        let chain = self.sign(id, &key, not_before, not_after)?;
        let info = cert_info(id, &chain[0]).map_err(sign_err)?;
        Ok(WorkloadCert {
            id: id.clone(),
            chain,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            issued_at: SystemTime::now(),
            not_after: not_after.into(),
            info,
        })
    }

    /// Signs a leaf for `id` over a public key whose private half lives elsewhere (a CSR's, in
    /// `sockmesh ca`), valid from a little before now for `ttl` capped at the CA's expiry. Returns
    /// the leaf, then `cert-chain.pem`.
    pub fn sign_for_key(
        &self,
        id: &SpiffeId,
        public_key: &impl PublicKeyData,
        ttl: StdDuration,
    ) -> Result<Vec<CertificateDer<'static>>, IssueError> {
        let now = OffsetDateTime::now_utc();
        let not_after = (now + ttl).min(self.ca.not_after());
        if not_after <= now {
            return Err(IssueError::CaExpired {
                id: id.clone(),
                ca_not_after: self.ca.not_after(),
            });
        }
        self.sign(id, public_key, now - BACKDATE, not_after)
    }

    /// The one place a workload leaf is made: SPIFFE URI SAN only, clientAuth + serverAuth.
    fn sign(
        &self,
        id: &SpiffeId,
        public_key: &impl PublicKeyData,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Vec<CertificateDer<'static>>, IssueError> {
        let sign_err = |why: String| IssueError::Sign {
            id: id.clone(),
            why,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, id.trust_domain());
        params.subject_alt_names = vec![SanType::URI(
            id.to_string()
                .try_into()
                .map_err(|e: rcgen::Error| sign_err(e.to_string()))?,
        )];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let leaf = params
            .signed_by(public_key, self.ca.issuer())
            .map_err(|e| sign_err(e.to_string()))?;
        let mut chain = Vec::with_capacity(1 + self.ca.chain().len());
        chain.push(leaf.der().clone());
        chain.extend(self.ca.chain().iter().cloned());
        Ok(chain)
    }
}

/// What the admin API shows of the leaf `der` issued for `id`.
pub(crate) fn cert_info(id: &SpiffeId, der: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let rfc3339 = |t: OffsetDateTime| t.format(&Rfc3339).map_err(|e| e.to_string());
    Ok(CertInfo {
        identity: id.to_string(),
        serial: cert.raw_serial_as_string(),
        issuer: cert.issuer().to_string(),
        not_before: rfc3339(cert.validity().not_before.to_datetime())?,
        not_after: rfc3339(cert.validity().not_after.to_datetime())?,
        sans: uri_sans(der).map_err(|e| e.to_string())?,
    })
}

/// An issuer over a fresh self-created CA; the directory lives as long as the returned guard.
#[cfg(test)]
pub(crate) fn test_issuer() -> (tempfile::TempDir, Issuer) {
    let dir = tempfile::tempdir().unwrap();
    let ca = MeshCa::load_or_create(dir.path(), "cluster.local").unwrap();
    (dir, Issuer::new(Arc::new(ca)))
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::ParsedExtension;

    use super::*;
    use crate::spiffe::{parse_cert, spiffe_id_in};

    #[test]
    fn leaf_has_spiffe_san_ekus_and_chain() {
        let (_dir, issuer) = test_issuer();
        let id: SpiffeId = "spiffe://cluster.local/ns/test1/sa/sleep".parse().unwrap();
        let cert = issuer.issue(&id, DEFAULT_TTL).unwrap();
        assert_eq!(cert.chain.len(), 2);
        assert_eq!(
            spiffe_id_in(&parse_cert(&cert.chain[0]).unwrap()).unwrap(),
            id
        );
        let (_, x509) = X509Certificate::from_der(&cert.chain[0]).unwrap();
        let eku = x509
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::ExtendedKeyUsage(eku) => Some(eku.clone()),
                _ => None,
            })
            .unwrap();
        assert!(eku.server_auth && eku.client_auth);
        assert!(!x509.is_ca());
        let life = cert.not_after.duration_since(cert.issued_at).unwrap();
        assert!(life <= DEFAULT_TTL && life > DEFAULT_TTL - StdDuration::from_secs(5));
        let backdate = cert
            .issued_at
            .duration_since(x509.validity().not_before.to_datetime().into());
        assert!(backdate.unwrap() >= StdDuration::from_secs(60));
        assert_eq!(cert.info.sans, vec![id.to_string()]);
        assert_eq!(cert.info.identity, id.to_string());
        assert!(cert.info.issuer.contains("sockmesh mesh root CA"));
    }

    #[test]
    fn refresh_at_is_half_of_remaining_life() {
        let (_dir, issuer) = test_issuer();
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let cert = issuer.issue(&id, StdDuration::from_secs(100)).unwrap();
        let half = cert.refresh_at().duration_since(cert.issued_at).unwrap();
        assert!((49..=50).contains(&half.as_secs()), "{half:?}");
    }

    #[test]
    fn serials_differ_per_issue() {
        let (_dir, issuer) = test_issuer();
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let a = issuer.issue(&id, DEFAULT_TTL).unwrap();
        let b = issuer.issue(&id, DEFAULT_TTL).unwrap();
        assert_ne!(a.info.serial, b.info.serial);
    }
}
