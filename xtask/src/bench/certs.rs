//! Leaf certificates for the HAProxy mTLS pair, issued by the same mesh CA the agents use, so the
//! reference pair verifies exactly the chain sockmesh's proxies verify.
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// HAProxy `crt` files (leaf, chain, key) for both sides and the `ca-file` (the mesh root).
#[derive(Debug, Clone)]
pub struct PairCerts {
    pub client_pem: PathBuf,
    pub server_pem: PathBuf,
    pub ca_file: PathBuf,
}

/// Issues ECDSA P-256 leaves with the SPIFFE URI SANs of `client` and `server` (`spiffe://...`)
/// from the Istio plug-in CA layout in `ca_dir`, and writes them to `out`.
pub fn issue(ca_dir: &Path, out: &Path, client: &str, server: &str) -> Result<PairCerts> {
    let read = |name: &str| {
        let path = ca_dir.join(name);
        fs::read_to_string(&path)
            .with_context(|| format!("reading the mesh CA's {}", path.display()))
    };
    let ca_key = KeyPair::from_pem(&read("ca-key.pem")?).context("parsing ca-key.pem")?;
    let issuer =
        Issuer::from_ca_cert_pem(&read("ca-cert.pem")?, ca_key).context("parsing ca-cert.pem")?;
    let chain = read("cert-chain.pem")?;
    let ca_file = ca_dir.join("root-cert.pem");
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let leaf = |name: &str, uri: &str| -> Result<PathBuf> {
        let key = KeyPair::generate().context("generating a P-256 key")?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing {uri}"))?;
        let path = out.join(format!("{name}.pem"));
        fs::write(
            &path,
            format!("{}{}{}", cert.pem(), chain, key.serialize_pem()),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    Ok(PairCerts {
        client_pem: leaf("client", client)?,
        server_pem: leaf("server", server)?,
        ca_file,
    })
}
