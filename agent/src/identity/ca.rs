//! The mesh CA, read from Istio's plug-in CA layout (`cacerts` secret) or created once and persisted there.
//!
//! Files: `ca-cert.pem` signs workload certs with `ca-key.pem`; `root-cert.pem` is what peers trust;
//! `cert-chain.pem` is ca-cert plus intermediates up to the root and is served after each leaf.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::ParsedCertificate;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";
const ALL_FILES: [&str; 4] = [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN];
/// Serialises creation between agents sharing one directory (e.g. two nodes on one host path).
const LOCK_FILE: &str = ".sockmesh-ca.lock";
const ROOT_VALIDITY: Duration = Duration::days(3650);

/// Why the mesh CA could not be loaded or created; always names the directory or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "plug-in CA directory {} is incomplete: missing {missing:?}; provide all of {ALL_FILES:?} or none",
        dir.display()
    )]
    Partial {
        dir: PathBuf,
        missing: Vec<&'static str>,
    },
    #[error("{}: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
    #[error("{}: certificate {subject} is outside its validity ({not_before} .. {not_after})", path.display())]
    Expired {
        path: PathBuf,
        subject: String,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    #[error("generating the mesh root CA in {}: {source}", dir.display())]
    Generate { dir: PathBuf, source: rcgen::Error },
    #[error("plug-in CA in {} is inconsistent (a probe cert signed with {CA_KEY} does not chain to {ROOT_CERT} via {CERT_CHAIN}): {why}", dir.display())]
    Inconsistent { dir: PathBuf, why: String },
}

/// A loaded, self-checked signing CA plus the trust anchors of the mesh.
pub struct MeshCa {
    issuer: rcgen::Issuer<'static, KeyPair>,
    chain: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    root_certs: Vec<CertificateDer<'static>>,
    not_after: OffsetDateTime,
}

impl MeshCa {
    /// Loads the layout in `dir`; when all four files are absent, creates a P-256 root there first.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Self, CaError> {
        if missing_files(dir).is_empty() {
            return Self::load(dir);
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| io_err(dir, source))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| io_err(&lock_path, source))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_err(&lock_path, errno.into()))?;
        let missing = missing_files(dir);
        if missing.len() == ALL_FILES.len() {
            create_root(dir, trust_domain)?;
        }
        Self::load(dir)
    }

    /// Loads an existing layout; partial, corrupt, expired or mismatched layouts are errors.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let missing = missing_files(dir);
        if !missing.is_empty() {
            return Err(CaError::Partial {
                dir: dir.to_path_buf(),
                missing,
            });
        }
        let ca_cert = read_certs(&dir.join(CA_CERT))?.swap_remove(0);
        let roots_der = read_certs(&dir.join(ROOT_CERT))?;
        let chain = read_certs(&dir.join(CERT_CHAIN))?;
        let key = read_key(&dir.join(CA_KEY))?;

        let ca_path = dir.join(CA_CERT);
        let mut not_after = check_validity(&ca_path, &ca_cert)?;
        for cert in roots_der.iter() {
            not_after = not_after.min(check_validity(&dir.join(ROOT_CERT), cert)?);
        }
        for cert in chain.iter() {
            not_after = not_after.min(check_validity(&dir.join(CERT_CHAIN), cert)?);
        }
        if chain[0] != ca_cert {
            return Err(invalid(
                &dir.join(CERT_CHAIN),
                "first certificate is not ca-cert.pem",
            ));
        }
        let issuer = rcgen::Issuer::from_ca_cert_der(&ca_cert, key)
            .map_err(|e| invalid(&ca_path, format!("unusable as issuer: {e}")))?;
        let mut roots = RootCertStore::empty();
        for cert in roots_der.iter().cloned() {
            roots.add(cert).map_err(|e| {
                invalid(
                    &dir.join(ROOT_CERT),
                    format!("not a usable trust anchor: {e}"),
                )
            })?;
        }
        let ca = MeshCa {
            issuer,
            chain,
            roots: Arc::new(roots),
            root_certs: roots_der,
            not_after,
        };
        ca.self_check().map_err(|why| CaError::Inconsistent {
            dir: dir.to_path_buf(),
            why,
        })?;
        Ok(ca)
    }

    /// Trust anchors every mesh peer must chain to.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// `root-cert.pem`'s certificates: the trust bundle a remote CA hands out (one root, or two
    /// during a rotation).
    pub fn root_certs(&self) -> &[CertificateDer<'static>] {
        &self.root_certs
    }

    /// `cert-chain.pem`: served after each workload leaf so peers can reach the root.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The earliest expiry in the CA's own chain; leaves must not outlive it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    pub(crate) fn issuer(&self) -> &rcgen::Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// Signs a throwaway leaf and verifies it like a peer would, so a key that does not match the
    /// cert, or a chain that does not reach the root, fails at start-up rather than in handshakes.
    fn self_check(&self) -> Result<(), String> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            "spiffe://probe.invalid/ns/probe/sa/probe"
                .try_into()
                .map_err(|e| format!("{e}"))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(1);
        params.not_after = (now + Duration::minutes(1)).min(self.not_after);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| e.to_string())?;
        let parsed = ParsedCertificate::try_from(leaf.der()).map_err(|e| e.to_string())?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            &self.chain,
            UnixTime::now(),
            crate::crypto::provider()
                .signature_verification_algorithms
                .all,
        )
        .map_err(|e| e.to_string())
    }
}

fn io_err(path: &Path, source: io::Error) -> CaError {
    CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, why: impl Into<String>) -> CaError {
    CaError::Invalid {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn missing_files(dir: &Path) -> Vec<&'static str> {
    ALL_FILES
        .into_iter()
        .filter(|f| !dir.join(f).exists())
        .collect()
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let bytes = fs::read(path).map_err(|source| io_err(path, source))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<KeyPair, CaError> {
    let bytes = fs::read(path).map_err(|source| io_err(path, source))?;
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| invalid(path, format!("no private key: {e}")))?;
    KeyPair::try_from(&key).map_err(|e| invalid(path, format!("unsupported private key: {e}")))
}

/// Returns the certificate's `not_after` if it is valid now.
fn check_validity(path: &Path, der: &CertificateDer<'_>) -> Result<OffsetDateTime, CaError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| invalid(path, format!("not an X.509 certificate: {e}")))?;
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    let now = OffsetDateTime::now_utc();
    if now < not_before || now >= not_after {
        return Err(CaError::Expired {
            path: path.to_path_buf(),
            subject: cert.subject().to_string(),
            not_before,
            not_after,
        });
    }
    Ok(not_after)
}

fn create_root(dir: &Path, trust_domain: &str) -> Result<(), CaError> {
    let generate = |source| CaError::Generate {
        dir: dir.to_path_buf(),
        source,
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain);
    params
        .distinguished_name
        .push(DnType::CommonName, "sockmesh mesh root CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + ROOT_VALIDITY;
    let cert = params.self_signed(&key).map_err(generate)?;
    let pem = cert.pem();
    write_atomic(dir, CA_KEY, key.serialize_pem().as_bytes(), 0o600)?;
    for name in [ROOT_CERT, CERT_CHAIN, CA_CERT] {
        write_atomic(dir, name, pem.as_bytes(), 0o644)?;
    }
    let dir_file = File::open(dir).map_err(|source| io_err(dir, source))?;
    dir_file.sync_all().map_err(|source| io_err(dir, source))
}

/// Temp file + fsync + rename, so readers never see a half-written file.
fn write_atomic(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))
    })();
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        io_err(&dir.join(name), source)
    })
}

#[cfg(test)]
#[path = "ca_tests.rs"]
pub(crate) mod tests;
