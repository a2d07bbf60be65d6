//! The attackers' client certificates: one the mesh must accept (the control) and one per way a
//! certificate must be refused, all but the foreign one signed by the mesh CA itself.
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};

use super::pod::Attack;

/// Identity of the attacker's valid certificate: the mesh's trust domain, a made-up workload.
const MESH_ID: &str = "spiffe://cluster.local/ns/outside/sa/attacker";
/// Signed by the mesh root, but outside its trust domain (issue 12, failure 1).
const EVIL_ID: &str = "spiffe://evil.local/ns/x/sa/y";

/// Writes `<kind>.pem` (leaf, then chain) and `<kind>-key.pem` into `out` for every TLS attack.
pub fn write(ca_dir: &Path, out: &Path) -> Result<()> {
    let read = |name: &str| {
        let path = ca_dir.join(name);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let mesh_key = KeyPair::from_pem(&read("ca-key.pem")?).context("parsing ca-key.pem")?;
    let mesh = Issuer::from_ca_cert_pem(&read("ca-cert.pem")?, mesh_key)?;
    let mesh_chain = read("cert-chain.pem")?;
    let foreign_key = KeyPair::generate()?;
    let mut foreign_params = CertificateParams::new(Vec::<String>::new())?;
    foreign_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    foreign_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let foreign_cert = foreign_params.self_signed(&foreign_key)?;
    let foreign_chain = foreign_cert.pem();
    let foreign = Issuer::new(foreign_params, foreign_key);
    fs::create_dir_all(out)?;
    for kind in Attack::ALL.into_iter().filter(|k| k.uses_tls()) {
        let mut params = CertificateParams::default();
        let id = if kind == Attack::WrongTrustDomain {
            EVIL_ID
        } else {
            MESH_ID
        };
        params.subject_alt_names = vec![SanType::URI(id.try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        match kind {
            Attack::Expired => {
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
            }
            Attack::NotYetValid => {
                params.not_before = date_time_ymd(2090, 1, 1);
                params.not_after = date_time_ymd(2091, 1, 1);
            }
            Attack::NoEku => params.extended_key_usages.clear(),
            _ => {}
        }
        let key = KeyPair::generate()?;
        let (cert, chain) = if kind == Attack::ForeignCa {
            (params.signed_by(&key, &foreign)?, &foreign_chain)
        } else {
            (params.signed_by(&key, &mesh)?, &mesh_chain)
        };
        fs::write(
            out.join(format!("{}.pem", kind.id())),
            format!("{}{chain}", cert.pem()),
        )?;
        fs::write(
            out.join(format!("{}-key.pem", kind.id())),
            key.serialize_pem(),
        )?;
    }
    Ok(())
}
