use std::os::unix::fs::PermissionsExt;

use super::*;

/// Writes an Istio plug-in layout where ca-cert is an intermediate signed by a separate root.
pub(crate) fn write_intermediate_layout(dir: &Path, root_not_after: OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name
        .push(DnType::CommonName, "test root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.not_before = now - Duration::days(2);
    root.not_after = root_not_after;
    let root_cert = root.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root, root_key);

    let int_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut int = CertificateParams::default();
    int.distinguished_name = rcgen::DistinguishedName::new();
    int.distinguished_name
        .push(DnType::CommonName, "test intermediate");
    int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    int.not_before = now - Duration::days(1);
    int.not_after = now + Duration::days(30);
    let int_cert = int.signed_by(&int_key, &root_issuer).unwrap();

    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(ROOT_CERT), root_cert.pem()).unwrap();
    fs::write(dir.join(CA_CERT), int_cert.pem()).unwrap();
    fs::write(dir.join(CA_KEY), int_key.serialize_pem()).unwrap();
    fs::write(dir.join(CERT_CHAIN), int_cert.pem() + &root_cert.pem()).unwrap();
}

#[test]
fn creates_once_and_reloads_same_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("cacerts");
    let first = MeshCa::load_or_create(&ca_dir, "cluster.local").unwrap();
    let key_mode = fs::metadata(ca_dir.join(CA_KEY))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let root = fs::read(ca_dir.join(ROOT_CERT)).unwrap();
    let second = MeshCa::load_or_create(&ca_dir, "cluster.local").unwrap();
    assert_eq!(fs::read(ca_dir.join(ROOT_CERT)).unwrap(), root);
    assert_eq!(first.chain(), second.chain());
    assert_eq!(first.roots().len(), 1);
}

#[test]
fn concurrent_creators_agree_on_one_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().to_path_buf();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let d = ca_dir.clone();
            std::thread::spawn(move || {
                MeshCa::load_or_create(&d, "cluster.local")
                    .unwrap()
                    .chain()
                    .to_vec()
            })
        })
        .collect();
    let chains: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(chains.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn partial_layout_names_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    MeshCa::load_or_create(dir.path(), "cluster.local").unwrap();
    fs::remove_file(dir.path().join(CA_KEY)).unwrap();
    let err = MeshCa::load_or_create(dir.path(), "cluster.local")
        .err()
        .unwrap();
    assert!(matches!(&err, CaError::Partial { missing, .. } if missing == &vec![CA_KEY]));
    assert!(err.to_string().contains("ca-key.pem"), "{err}");
}

#[test]
fn corrupt_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    MeshCa::load_or_create(dir.path(), "cluster.local").unwrap();
    fs::write(dir.path().join(ROOT_CERT), "garbage").unwrap();
    let err = MeshCa::load(dir.path()).err().unwrap();
    assert!(err.to_string().contains("root-cert.pem"), "{err}");
}

#[test]
fn mismatched_key_is_inconsistent() {
    let dir = tempfile::tempdir().unwrap();
    MeshCa::load_or_create(dir.path(), "cluster.local").unwrap();
    let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    fs::write(dir.path().join(CA_KEY), other.serialize_pem()).unwrap();
    let err = MeshCa::load(dir.path()).err().unwrap();
    assert!(matches!(err, CaError::Inconsistent { .. }), "{err}");
}

#[test]
fn intermediate_layout_loads() {
    let dir = tempfile::tempdir().unwrap();
    write_intermediate_layout(dir.path(), OffsetDateTime::now_utc() + Duration::days(365));
    let ca = MeshCa::load(dir.path()).unwrap();
    assert_eq!(ca.chain().len(), 2);
}

#[test]
fn expired_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_intermediate_layout(dir.path(), OffsetDateTime::now_utc() - Duration::hours(1));
    let err = MeshCa::load(dir.path()).err().unwrap();
    assert!(matches!(err, CaError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("root-cert.pem"), "{err}");
}
