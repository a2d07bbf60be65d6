//! SPIFFE workload identities as Istio uses them: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`, and
//! the trust domains a node accepts peers from.
//!
//! A leaf module: `identity` issues certificates for these IDs and `tls` checks peers against them,
//! and neither has to import the other for it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const SCHEME: &str = "spiffe://";

/// Why a string or certificate did not yield a SPIFFE identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpiffeError {
    #[error("invalid SPIFFE ID {0:?}: {1}")]
    Invalid(String, &'static str),
    #[error("certificate is not valid X.509: {0}")]
    BadCertificate(String),
    #[error("certificate carries no SPIFFE URI SAN (URI SANs: {0:?})")]
    NoSpiffeSan(Vec<String>),
    #[error("invalid trust domain {0:?}: lowercase letters, digits, '.', '-' and '_' only")]
    TrustDomain(String),
}

/// Identity of a Kubernetes service account in the mesh; one certificate is issued per identity.
/// Shared behind an `Arc` because it is cloned into every connection's logs and errors.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId(Arc<Parts>);

#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Parts {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds an identity from its parts, validating them as [`FromStr`] would.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeError> {
        format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    pub fn trust_domain(&self) -> &str {
        &self.0.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.0.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.0.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.0.trust_domain, self.0.namespace, self.0.service_account
        )
    }
}

/// Trust domains are lowercase DNS-like labels (SPIFFE spec); anything else is rejected.
fn valid_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// Path segments per SPIFFE spec; `.` and `..` are refused so IDs cannot alias each other.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why| SpiffeError::Invalid(s.to_string(), why);
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("scheme is not spiffe://"))?;
        let (trust_domain, path) = rest.split_once('/').ok_or_else(|| invalid("no path"))?;
        if !valid_trust_domain(trust_domain) {
            return Err(invalid("bad trust domain"));
        }
        let parts: Vec<&str> = path.split('/').collect();
        let [ns_key, namespace, sa_key, service_account] = parts[..] else {
            return Err(invalid("path is not ns/<namespace>/sa/<service-account>"));
        };
        if ns_key != "ns" || sa_key != "sa" {
            return Err(invalid("path is not ns/<namespace>/sa/<service-account>"));
        }
        if !valid_segment(namespace) || !valid_segment(service_account) {
            return Err(invalid("bad namespace or service account"));
        }
        Ok(SpiffeId(Arc::new(Parts {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })))
    }
}

/// The trust domain of this mesh and its aliases (Istio's `trustDomainAliases`): a peer whose SPIFFE
/// ID is in any of them may be a mesh peer; any other ID is refused even when its certificate chains
/// to the mesh root. Aliases let a mesh keep accepting the identities of a trust domain it migrated
/// away from, or of another mesh that shares its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustDomains {
    /// The local trust domain first, then the aliases, without duplicates.
    names: Vec<String>,
}

impl TrustDomains {
    /// `local` is the trust domain the node's own identities are issued in.
    pub fn new(local: &str, aliases: &[String]) -> Result<Self, SpiffeError> {
        let mut names: Vec<String> = Vec::with_capacity(1 + aliases.len());
        for name in std::iter::once(local).chain(aliases.iter().map(String::as_str)) {
            if !valid_trust_domain(name) {
                return Err(SpiffeError::TrustDomain(name.to_owned()));
            }
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        Ok(TrustDomains { names })
    }

    /// Whether `id` belongs to the local trust domain or one of its aliases.
    pub fn accepts(&self, id: &SpiffeId) -> bool {
        self.names.iter().any(|n| n == id.trust_domain())
    }

    /// The local trust domain.
    pub fn local(&self) -> &str {
        &self.names[0]
    }

    /// The aliases, in the order given.
    pub fn aliases(&self) -> &[String] {
        &self.names[1..]
    }
}

/// `cluster.local` or `cluster.local (aliases: old.local, other.mesh)`, for error messages.
impl fmt::Display for TrustDomains {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.local())?;
        if !self.aliases().is_empty() {
            write!(f, " (aliases: {})", self.aliases().join(", "))?;
        }
        Ok(())
    }
}

/// All URI SANs of a DER certificate, in order.
pub fn uri_sans(cert_der: &[u8]) -> Result<Vec<String>, SpiffeError> {
    uri_sans_in(&parse_cert(cert_der)?)
}

/// The SPIFFE identity of a parsed certificate ([`parse_cert`]): its first URI SAN that parses as
/// one. Taking the parsed form lets a caller read other extensions without parsing twice.
pub fn spiffe_id_in(cert: &X509Certificate<'_>) -> Result<SpiffeId, SpiffeError> {
    let uris = uri_sans_in(cert)?;
    uris.iter()
        .find_map(|u| u.parse().ok())
        .ok_or(SpiffeError::NoSpiffeSan(uris))
}

/// Parses a DER certificate, mapping the error to [`SpiffeError::BadCertificate`].
pub fn parse_cert(cert_der: &[u8]) -> Result<X509Certificate<'_>, SpiffeError> {
    X509Certificate::from_der(cert_der)
        .map(|(_, cert)| cert)
        .map_err(|e| SpiffeError::BadCertificate(e.to_string()))
}

fn uri_sans_in(cert: &X509Certificate<'_>) -> Result<Vec<String>, SpiffeError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SpiffeError::BadCertificate(e.to_string()))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(uri.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_of(der: &[u8]) -> Result<SpiffeId, SpiffeError> {
        spiffe_id_in(&parse_cert(der)?)
    }

    #[test]
    fn round_trip() {
        let s = "spiffe://cluster.local/ns/test1/sa/sleep";
        let id: SpiffeId = s.parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "test1");
        assert_eq!(id.service_account(), "sleep");
        assert_eq!(id.to_string(), s);
        assert_eq!(
            SpiffeId::new("cluster.local", "test1", "sleep").unwrap(),
            id
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "http://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local",
            "spiffe:///ns/a/sa/b",
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/sa",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/sa/a/ns/b",
            "spiffe://cluster.local/ns/a b/sa/b",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn trust_domains_accept_local_and_aliases_only() {
        let domains = TrustDomains::new(
            "cluster.local",
            &["old.local".into(), "cluster.local".into()],
        )
        .unwrap();
        let id = |td| SpiffeId::new(td, "a", "b").unwrap();
        assert!(domains.accepts(&id("cluster.local")));
        assert!(domains.accepts(&id("old.local")));
        assert!(!domains.accepts(&id("evil.local")));
        assert!(!domains.accepts(&id("cluster.local.evil")));
        assert_eq!(domains.to_string(), "cluster.local (aliases: old.local)");
        assert_eq!(
            TrustDomains::new("cluster.local", &[]).unwrap().to_string(),
            "cluster.local"
        );
        assert_eq!(
            TrustDomains::new("cluster.local", &["Bad/Domain".into()]),
            Err(SpiffeError::TrustDomain("Bad/Domain".into()))
        );
    }

    #[test]
    fn extracts_uri_san() {
        let mut params = rcgen::CertificateParams::new(vec!["example.com".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://td/ns/n/sa/s".try_into().unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(uri_sans(cert.der()).unwrap(), vec!["spiffe://td/ns/n/sa/s"]);
        assert_eq!(
            id_of(cert.der()).unwrap().to_string(),
            "spiffe://td/ns/n/sa/s"
        );
    }

    #[test]
    fn no_spiffe_san_and_garbage() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(id_of(cert.der()), Err(SpiffeError::NoSpiffeSan(vec![])));
        assert!(matches!(
            id_of(b"junk"),
            Err(SpiffeError::BadCertificate(_))
        ));
    }
}
