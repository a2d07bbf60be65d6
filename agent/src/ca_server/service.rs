//! `CreateCertificate`: authenticate the caller, decide the identity it asked for, check the CSR,
//! authorize, sign. Every refusal is logged once (caller, requested identity, reason) and counted.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateSigningRequestParams, SanType};
use tracing::{info, warn};

use super::authenticate::{Caller, TokenReviewer, bearer};
use super::authorize::{NodeAuthorizer, PodDirectory};
use super::metrics::CaMetrics;
use super::refusal::Refusal;
use crate::identity::Issuer;
use crate::identity::ca_api::{CertificateRequest, CertificateResponse, certificate_pem};
use crate::spiffe::SpiffeId;

/// Lifetime when the request names none (`validity_duration` 0), as Istio's default.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The signing service over the plug-in CA.
pub struct CertificateService<P> {
    pub issuer: Issuer,
    pub reviewer: TokenReviewer,
    pub authorizer: NodeAuthorizer<P>,
    pub metrics: Arc<CaMetrics>,
    pub max_ttl: Duration,
}

impl<P: PodDirectory> CertificateService<P> {
    pub async fn create_certificate(
        &self,
        request: tonic::Request<CertificateRequest>,
    ) -> Result<tonic::Response<CertificateResponse>, tonic::Status> {
        let (metadata, _, body) = request.into_parts();
        let mut caller = None;
        let mut requested = body.impersonated_identity().map(str::to_string);
        let result = async {
            let token = bearer(&metadata)?;
            let who = self.reviewer.review(token).await?;
            caller = Some(who.clone());
            let id = match body.impersonated_identity() {
                Some(id) => id.parse::<SpiffeId>().map_err(|e| {
                    Refusal::invalid("bad_identity", format!("ImpersonatedIdentity: {e}"))
                })?,
                None => self.authorizer.own_identity(&who)?,
            };
            requested = Some(id.to_string());
            self.sign(&who, &id, &body).await
        }
        .await;
        match result {
            Ok(response) => {
                self.metrics.issued();
                Ok(tonic::Response::new(response))
            }
            Err(refusal) => {
                let caller =
                    caller.map_or_else(|| "unauthenticated".to_string(), |c| c.to_string());
                let requested = requested.as_deref().unwrap_or("its own identity");
                warn!(%caller, requested, reason = refusal.reason, detail = %refusal.detail, "certificate request refused");
                self.metrics.refused(refusal.reason);
                Err(refusal.status())
            }
        }
    }

    async fn sign(
        &self,
        caller: &Caller,
        id: &SpiffeId,
        body: &CertificateRequest,
    ) -> Result<CertificateResponse, Refusal> {
        let csr = CertificateSigningRequestParams::from_pem(&body.csr)
            .map_err(|e| Refusal::invalid("bad_csr", format!("CSR: {e}")))?;
        check_csr_names(&csr, id)?;
        self.authorizer.authorize(caller, id).await?;
        let ttl = match body.validity_duration {
            secs if secs > 0 => Duration::from_secs(secs as u64),
            _ => DEFAULT_TTL,
        }
        .min(self.max_ttl);
        let chain = self
            .issuer
            .sign_for_key(id, &csr.public_key, ttl)
            .map_err(|e| Refusal::unavailable("signing_failed", e.to_string()))?;
        let roots = self.issuer.ca().root_certs();
        let mut cert_chain: Vec<String> = chain
            .iter()
            .filter(|c| !roots.contains(c))
            .map(|c| certificate_pem(c))
            .collect();
        cert_chain.extend(roots.iter().map(|c| certificate_pem(c)));
        info!(%caller, identity = %id, ttl = ?ttl, "certificate issued");
        Ok(CertificateResponse { cert_chain })
    }
}

/// The CSR may name the identity it is for, and nothing else: the CA signs only `id` anyway, but a
/// CSR asking for something else says the caller wanted what it may not have.
fn check_csr_names(csr: &CertificateSigningRequestParams, id: &SpiffeId) -> Result<(), Refusal> {
    let wanted = id.to_string();
    for san in &csr.params.subject_alt_names {
        match san {
            SanType::URI(uri) if uri.as_str() == wanted => {}
            other => {
                return Err(Refusal::denied(
                    "csr_identity_mismatch",
                    format!("the CSR asks for {other:?}, the request is for {wanted}"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    fn csr(sans: Vec<SanType>) -> CertificateSigningRequestParams {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequestParams::from_pem(&pem).unwrap()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn csr_may_name_only_the_authorized_identity() {
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        assert!(check_csr_names(&csr(vec![]), &id).is_ok());
        assert!(check_csr_names(&csr(vec![uri(&id.to_string())]), &id).is_ok());
        for sans in [
            vec![uri("spiffe://cluster.local/ns/a/sa/admin")],
            vec![
                uri(&id.to_string()),
                SanType::DnsName("evil.example".try_into().unwrap()),
            ],
        ] {
            let refusal = check_csr_names(&csr(sans), &id).unwrap_err();
            assert_eq!(refusal.reason, "csr_identity_mismatch");
            assert_eq!(refusal.code, tonic::Code::PermissionDenied);
        }
    }
}
