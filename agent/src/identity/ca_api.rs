//! Istio's CA API on the wire (istio/api `security/v1alpha1/ca.proto`, package `istio.v1.auth`):
//! one unary gRPC method, `IstioCertificateService/CreateCertificate`, spoken by istiod, ztunnel,
//! Istio's sidecar agent, the agent's [`super::ca_client`] and `sockmesh ca`.
//!
//! The two messages are written out by hand (no protoc): field numbers and types as in the proto.
//! The caller authenticates with `authorization: Bearer <service-account JWT>` (audience
//! [`TOKEN_AUDIENCE`]) and names its cluster in the `ClusterID` header; a node agent asking for a
//! workload's identity rather than its own puts that SPIFFE id in the request metadata under
//! [`IMPERSONATED_IDENTITY`]. The response's `cert_chain` is one PEM certificate per element: the
//! leaf, its intermediates, then the roots of the trust bundle (the self-signed ones).

/// `/package.Service/Method`, the HTTP/2 path of the call.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";
/// Request metadata key (in `metadata`, a `google.protobuf.Struct`) naming the identity asked for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";
/// gRPC header naming the caller's cluster (istiod picks the cluster's API server by it).
pub const CLUSTER_ID_HEADER: &str = "clusterid";
/// The audience of the service-account token the caller presents, as istiod requires.
pub const TOKEN_AUDIENCE: &str = "istio-ca";

/// `IstioCertificateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CertificateRequest {
    /// PEM-encoded PKCS#10 certificate signing request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds; the server may shorten it.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Optional request metadata (e.g. [`IMPERSONATED_IDENTITY`]).
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// `IstioCertificateResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CertificateResponse {
    /// PEM certificates: leaf first, then intermediates, then the bundle's roots.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

impl CertificateRequest {
    /// The impersonated identity, if the metadata names one as a string.
    pub fn impersonated_identity(&self) -> Option<&str> {
        let value = self.metadata.as_ref()?.fields.get(IMPERSONATED_IDENTITY)?;
        match value.kind.as_ref()? {
            prost_types::value::Kind::StringValue(s) => Some(s),
            _ => None,
        }
    }

    /// Metadata naming `id` as the impersonated identity.
    pub fn impersonating(id: &str) -> prost_types::Struct {
        let value = prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(id.to_string())),
        };
        prost_types::Struct {
            fields: [(IMPERSONATED_IDENTITY.to_string(), value)].into(),
        }
    }
}

/// One `cert_chain` element: a certificate as PEM.
pub fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Field numbers as in ca.proto: csr = 1 (string), validity_duration = 3 (int64), metadata = 4.
    #[test]
    fn request_encodes_with_the_proto_field_numbers() {
        let request = CertificateRequest {
            csr: "C".into(),
            validity_duration: 60,
            metadata: Some(CertificateRequest::impersonating("spiffe://td/ns/a/sa/b")),
        };
        let bytes = request.encode_to_vec();
        assert_eq!(&bytes[..3], &[0x0a, 1, b'C']);
        assert_eq!(&bytes[3..5], &[0x18, 60]);
        assert_eq!(bytes[5], 0x22);
        let decoded = CertificateRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            decoded.impersonated_identity(),
            Some("spiffe://td/ns/a/sa/b")
        );
    }
}
