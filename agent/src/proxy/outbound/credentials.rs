//! Origination credentials (DestinationRule SIMPLE and MUTUAL): one client TLS config per
//! distinct setting, built once and rebuilt when a certificate file changes. No connection reads
//! files: a cached config is used as is for a second, then the files' metadata is checked
//! (asynchronously) and they are read again only when they changed.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustls::ClientConfig;

use crate::{
    policy::{ClientTls, TlsMode, decision::CertSource},
    tls::origination::{self, OriginationError, OriginationMode, OriginationSettings},
};

/// Why an origination config could not be built; the connection is refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading {field} {path}: {source}")]
    Read {
        field: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Build(#[from] OriginationError),
}

/// Distinct settings kept; the least recently used is dropped beyond this, so configuration churn
/// (a Secret rotated many times) cannot grow the cache without bound.
const MAX_ENTRIES: usize = 256;
/// How long a cached config is used before its files are checked again.
const RECHECK: Duration = Duration::from_secs(1);

/// Built origination configs by setting.
#[derive(Default)]
pub struct Credentials {
    cache: Mutex<HashMap<CredentialKey, Entry>>,
}

/// What makes two endpoints' origination settings the same: their sources (file paths, or the
/// PEM of a `credentialName` Secret), SANs and flags.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CredentialKey {
    mutual: bool,
    ca_certificates: Option<Source>,
    client_certificate: Option<Source>,
    private_key: Option<Source>,
    subject_alt_names: Vec<String>,
    insecure_skip_verify: bool,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Source {
    File(String),
    Pem(Arc<Vec<u8>>),
}

/// A file as last read: changed when any of these differ.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    inode: u64,
    len: u64,
    modified: i64,
    modified_ns: i64,
}

struct Entry {
    config: Arc<ClientConfig>,
    files: Vec<(String, Fingerprint)>,
    checked: Instant,
    used: Instant,
}

impl Credentials {
    /// The client config for `client`'s settings.
    pub async fn config(&self, client: &ClientTls) -> Result<Arc<ClientConfig>, CredentialError> {
        let key = CredentialKey::of(client);
        let files = match self.cached(&key, None) {
            Lookup::Fresh(config) => return Ok(config),
            Lookup::Stale(files) => files,
            Lookup::Missing => Vec::new(),
        };
        if !files.is_empty() {
            let current = fingerprints(files.iter().map(|(path, _)| path.as_str())).await;
            if current.as_ref().is_ok_and(|c| *c == files)
                && let Lookup::Fresh(config) = self.cached(&key, Some(&files))
            {
                return Ok(config);
            }
        }
        let (settings, files) = load(&key).await?;
        let config = Arc::new(origination::build(&settings)?);
        self.insert(key, config.clone(), files);
        Ok(config)
    }

    /// A config that may be used now. With `unchanged`, a stale entry whose files still have
    /// these fingerprints is fresh again.
    fn cached(&self, key: &CredentialKey, unchanged: Option<&[(String, Fingerprint)]>) -> Lookup {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = cache.get_mut(key) else {
            return Lookup::Missing;
        };
        let now = Instant::now();
        if unchanged.is_some_and(|files| files == entry.files) {
            entry.checked = now;
        }
        if entry.files.is_empty() || now.duration_since(entry.checked) < RECHECK {
            entry.used = now;
            return Lookup::Fresh(entry.config.clone());
        }
        Lookup::Stale(entry.files.clone())
    }

    fn insert(
        &self,
        key: CredentialKey,
        config: Arc<ClientConfig>,
        files: Vec<(String, Fingerprint)>,
    ) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_ENTRIES && !cache.contains_key(&key) {
            let oldest = cache
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                cache.remove(&oldest);
            }
        }
        let now = Instant::now();
        cache.insert(
            key,
            Entry {
                config,
                files,
                checked: now,
                used: now,
            },
        );
    }
}

enum Lookup {
    Fresh(Arc<ClientConfig>),
    Stale(Vec<(String, Fingerprint)>),
    Missing,
}

impl CredentialKey {
    fn of(c: &ClientTls) -> Self {
        let source = |s: &Option<CertSource>| {
            s.as_ref().map(|s| match s {
                CertSource::File(path) => Source::File(path.clone()),
                CertSource::Pem(pem) => Source::Pem(pem.clone()),
            })
        };
        Self {
            mutual: c.mode == TlsMode::Mutual,
            ca_certificates: source(&c.ca_certificates),
            client_certificate: source(&c.client_certificate),
            private_key: source(&c.private_key),
            subject_alt_names: c.subject_alt_names.clone(),
            insecure_skip_verify: c.insecure_skip_verify,
        }
    }
}

/// Reads the key's files and PEM into settings, with the fingerprints of the files read.
async fn load(
    key: &CredentialKey,
) -> Result<(OriginationSettings, Vec<(String, Fingerprint)>), CredentialError> {
    let mut files = Vec::new();
    let mut read = async |field, source: &Option<Source>| -> Result<_, CredentialError> {
        match source {
            None => Ok(None),
            Some(Source::Pem(pem)) => Ok(Some(pem.as_ref().clone())),
            Some(Source::File(path)) => {
                let error = |source| CredentialError::Read {
                    field,
                    path: path.clone(),
                    source,
                };
                let fingerprint = fingerprint(path).await.map_err(error)?;
                let bytes = tokio::fs::read(path).await.map_err(error)?;
                files.push((path.clone(), fingerprint));
                Ok(Some(bytes))
            }
        }
    };
    let ca_certificates = read("caCertificates", &key.ca_certificates).await?;
    let client_certificate = read("clientCertificate", &key.client_certificate).await?;
    let private_key = read("privateKey", &key.private_key).await?;
    let settings = OriginationSettings {
        mode: if key.mutual {
            OriginationMode::Mutual
        } else {
            OriginationMode::Simple
        },
        ca_certificates,
        client_certificate,
        private_key,
        subject_alt_names: key.subject_alt_names.clone(),
        insecure_skip_verify: key.insecure_skip_verify,
    };
    Ok((settings, files))
}

async fn fingerprints<'a>(
    paths: impl Iterator<Item = &'a str>,
) -> std::io::Result<Vec<(String, Fingerprint)>> {
    let mut out = Vec::new();
    for path in paths {
        out.push((path.to_owned(), fingerprint(path).await?));
    }
    Ok(out)
}

async fn fingerprint(path: &str) -> std::io::Result<Fingerprint> {
    let meta = tokio::fs::metadata(path).await?;
    Ok(Fingerprint {
        inode: meta.ino(),
        len: meta.len(),
        modified: meta.mtime(),
        modified_ns: meta.mtime_nsec(),
    })
}

#[cfg(test)]
mod tests;
