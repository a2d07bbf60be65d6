//! Client-side TLS for one endpoint: the DestinationRule's settings when a rule sets `tls` for the
//! host and port, otherwise auto mTLS (Istio's `buildAutoMtlsSettings` in `cluster_tls.go`).
//!
//! Difference from Istio, on purpose: Istio infers one mode per *service* from the mesh and namespace
//! PeerAuthentication only, so a STRICT workload inside a DISABLE namespace gets plaintext and fails
//! (a known open bug). We know every endpoint's effective inbound mode on its target port, so auto
//! mTLS is decided per endpoint: ISTIO_MUTUAL when the endpoint is in the mesh and does not DISABLE
//! that port, plaintext otherwise, and never for `MESH_EXTERNAL` entries.

use std::sync::Arc;

use super::decision::{CertSource, ClientBasis, ClientTls, Decider};
use super::destination_rule::RuleTls;
use super::model::{InboundMode, TlsMode};

/// PEM material from a `credentialName` Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    pub cert: Option<Arc<Vec<u8>>>,
    pub key: Option<Arc<Vec<u8>>>,
    pub ca: Option<Arc<Vec<u8>>>,
}

/// Facts about the endpoint and destination that the client decision needs.
#[derive(Debug, Clone, Copy)]
pub struct EndpointFacts<'a> {
    pub in_mesh: bool,
    pub mode: InboundMode,
    pub identity: Option<&'a str>,
    pub mesh_external: bool,
    /// Host name of the destination (FQDN, entry host or external name/IP).
    pub host: &'a str,
    /// Port used in Istio's SNI form (the Service or entry port).
    pub port: u16,
}

impl EndpointFacts<'_> {
    /// Istio's SNI for ISTIO_MUTUAL: `outbound_.<port>_.<subset>_.<host>`, subset empty.
    pub fn istio_sni(&self) -> String {
        format!("outbound_.{}_._.{}", self.port, self.host)
    }
}

pub fn client_tls(
    rule: Option<RuleTls<'_>>,
    auto_mtls: bool,
    facts: &EndpointFacts<'_>,
    credential: Option<&Credential>,
) -> ClientTls {
    let Some(rule) = rule else {
        if !auto_mtls || facts.mesh_external || !facts.in_mesh || facts.mode == InboundMode::Disable
        {
            return ClientTls::plaintext(ClientBasis::Plaintext);
        }
        return ClientTls {
            mode: TlsMode::IstioMutual,
            sni: Some(facts.istio_sni()),
            subject_alt_names: facts.identity.map(str::to_owned).into_iter().collect(),
            ..ClientTls::plaintext(ClientBasis::AutoMtls)
        };
    };
    let tls = rule.tls;
    let decided_by = Some(Decider {
        resource: rule.resource(),
        port: rule.port_level,
    });
    let base = ClientTls {
        decided_by,
        ..ClientTls::plaintext(ClientBasis::DestinationRule)
    };
    match tls.mode {
        TlsMode::Disable => base,
        // Certificate fields are ignored for ISTIO_MUTUAL: the workload certificate is used.
        TlsMode::IstioMutual => ClientTls {
            mode: TlsMode::IstioMutual,
            sni: Some(tls.sni.clone().unwrap_or_else(|| facts.istio_sni())),
            subject_alt_names: if tls.subject_alt_names.is_empty() {
                facts.identity.map(str::to_owned).into_iter().collect()
            } else {
                tls.subject_alt_names.clone()
            },
            ..base
        },
        mode @ (TlsMode::Simple | TlsMode::Mutual) => {
            let file = |f: &Option<String>| f.clone().map(CertSource::File);
            let pem = |p: Option<&Arc<Vec<u8>>>| p.cloned().map(CertSource::Pem);
            let cred = if tls.credential_name.is_some() {
                credential
            } else {
                None
            };
            let mutual = mode == TlsMode::Mutual;
            ClientTls {
                mode,
                // Stand-in for Envoy's auto SNI (which reads the HTTP Host header we never see): the
                // destination's DNS name, never an IP literal.
                sni: tls.sni.clone().or_else(|| {
                    facts
                        .host
                        .parse::<std::net::IpAddr>()
                        .is_err()
                        .then(|| facts.host.to_owned())
                }),
                subject_alt_names: tls.subject_alt_names.clone(),
                ca_certificates: pem(cred.and_then(|c| c.ca.as_ref()))
                    .or_else(|| file(&tls.ca_certificates)),
                client_certificate: if mutual {
                    pem(cred.and_then(|c| c.cert.as_ref()))
                        .or_else(|| file(&tls.client_certificate))
                } else {
                    None
                },
                private_key: if mutual {
                    pem(cred.and_then(|c| c.key.as_ref())).or_else(|| file(&tls.private_key))
                } else {
                    None
                },
                insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
                ..base
            }
        }
    }
}
