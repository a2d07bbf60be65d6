//! A workload's key pair and certificate signing request, made on the node: the private key never
//! leaves it, only the CSR (public key + requested SPIFFE id) goes to the CA.

use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};

use super::issuer::IssueError;
use crate::spiffe::SpiffeId;

/// A fresh P-256 key and a PEM CSR naming `id` as its only (URI) subject alternative name.
pub fn workload_csr(id: &SpiffeId) -> Result<(KeyPair, String), IssueError> {
    let err = |e: rcgen::Error| IssueError::Sign {
        id: id.clone(),
        why: format!("making the CSR: {e}"),
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, id.trust_domain());
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into().map_err(err)?)];
    let csr = params.serialize_request(&key).map_err(err)?;
    Ok((key, csr.pem().map_err(err)?))
}

#[cfg(test)]
mod tests {
    use rcgen::CertificateSigningRequestParams;

    use super::*;

    #[test]
    fn csr_carries_the_spiffe_id_and_a_valid_signature() {
        let id: SpiffeId = "spiffe://cluster.local/ns/test1/sa/sleep".parse().unwrap();
        let (_key, pem) = workload_csr(&id).unwrap();
        let parsed = CertificateSigningRequestParams::from_pem(&pem).unwrap();
        assert_eq!(
            parsed.params.subject_alt_names,
            vec![SanType::URI(id.to_string().try_into().unwrap())]
        );
    }
}
