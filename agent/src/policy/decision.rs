//! What the resolver answers: the data path's view of one connection.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use super::model::{InboundMode, Location, PodKey, ResourceRef, TlsMode};

/// The resource (and `portLevelMtls` / `portLevelSettings` entry) that made a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decider {
    #[serde(flatten)]
    pub resource: ResourceRef,
    /// Set when a port-level entry decided.
    pub port: Option<u16>,
}

/// Server side of a connection: what the proxy in front of a pod accepts on one target port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inbound {
    pub mode: InboundMode,
    /// `None` when nothing is configured (PERMISSIVE) or the pod has no proxy (DISABLE).
    pub decided_by: Option<Decider>,
}

/// Why the client-side mode is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientBasis {
    /// A DestinationRule set `tls` for this host and port.
    DestinationRule,
    /// No rule: auto mTLS chose ISTIO_MUTUAL for a mesh endpoint that accepts it.
    AutoMtls,
    /// No rule and auto mTLS did not apply (endpoint outside the mesh, DISABLE, external, or off).
    Plaintext,
    /// The client has no sockmesh proxy, so its application's bytes go out as they are.
    ClientOutsideMesh,
}

/// Where a certificate or key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertSource {
    /// A file path from `caCertificates` / `clientCertificate` / `privateKey`.
    File(String),
    /// PEM bytes from the Secret named by `credentialName`.
    #[serde(serialize_with = "pem_len")]
    Pem(Arc<Vec<u8>>),
}

fn pem_len<S: serde::Serializer>(b: &Arc<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("<{} bytes of PEM>", b.len()))
}

/// Client-side TLS for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientTls {
    pub mode: TlsMode,
    pub sni: Option<String>,
    /// Identities the server certificate must carry (empty: any certificate the CA trusts).
    pub subject_alt_names: Vec<String>,
    pub ca_certificates: Option<CertSource>,
    pub client_certificate: Option<CertSource>,
    pub private_key: Option<CertSource>,
    pub insecure_skip_verify: bool,
    pub basis: ClientBasis,
    pub decided_by: Option<Decider>,
}

impl ClientTls {
    pub fn plaintext(basis: ClientBasis) -> Self {
        Self {
            mode: TlsMode::Disable,
            sni: None,
            subject_alt_names: Vec::new(),
            ca_certificates: None,
            client_certificate: None,
            private_key: None,
            insecure_skip_verify: false,
            basis,
            decided_by: None,
        }
    }
}

/// Whether client and server settings agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub connects: bool,
    /// Why it fails (`None` when it connects).
    pub reason: Option<String>,
}

/// One concrete upstream of a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Where to connect: pod IP and target port, or the original address when there is no pod.
    pub addr: Option<SocketAddr>,
    pub pod: Option<PodKey>,
    pub target_port: u16,
    pub in_mesh: bool,
    /// SPIFFE identity of the endpoint pod.
    pub identity: Option<String>,
    pub server: Inbound,
    pub client: ClientTls,
    pub outcome: Outcome,
}

/// What the dialled address is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum Destination {
    Service {
        namespace: String,
        name: String,
        fqdn: String,
        port: u16,
        port_name: Option<String>,
    },
    Pod {
        pod: PodKey,
        port: u16,
    },
    ServiceEntry {
        namespace: String,
        name: String,
        host: String,
        port: u16,
        location: Location,
    },
    External {
        host: String,
        port: u16,
    },
}

impl Destination {
    /// The host name used for DestinationRule lookup and SNI.
    pub fn host(&self) -> String {
        match self {
            Destination::Service { fqdn, .. } => fqdn.clone(),
            Destination::Pod { pod, .. } => pod.to_string(),
            Destination::ServiceEntry { host, .. } | Destination::External { host, .. } => {
                host.clone()
            }
        }
    }
}

/// The outbound answer for one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outbound {
    pub destination: Destination,
    /// The destination port carries the application's own TLS (protocol HTTPS/TLS, name `https*`/`tls*`).
    pub app_tls: bool,
    /// Candidate endpoints, sorted by pod key (or the single external address).
    pub endpoints: Vec<Endpoint>,
}
