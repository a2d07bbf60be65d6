use std::time::Duration;

use super::*;
use crate::identity::ca_api::certificate_pem;
use crate::identity::issuer::test_issuer;

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

/// A CA answer for `signed_for` (leaf, then the self-created CA's chain = its root) and the key
/// the request was made with.
fn answer(signed_for: &SpiffeId) -> (tempfile::TempDir, rcgen::KeyPair, Vec<String>) {
    let (dir, issuer) = test_issuer();
    let (key, _csr) = workload_csr(signed_for).unwrap();
    let chain = issuer
        .sign_for_key(signed_for, &key, Duration::from_secs(600))
        .unwrap();
    let pems = chain.iter().map(|c| certificate_pem(c)).collect();
    (dir, key, pems)
}

#[test]
fn answer_gives_leaf_chain_and_roots() {
    let sleep = id("spiffe://cluster.local/ns/test1/sa/sleep");
    let (_dir, key, pems) = answer(&sleep);
    let (cert, roots) = parse_response(&sleep, key, &pems).unwrap();
    assert_eq!(roots.len(), 1, "the self-signed root is the bundle");
    assert_eq!(cert.chain.len(), 1, "roots are not served after the leaf");
    assert_eq!(cert.info.identity, sleep.to_string());
    let life = cert.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(life > Duration::from_secs(590), "{life:?}");
}

#[test]
fn leaf_for_another_identity_is_refused() {
    let (_dir, key, pems) = answer(&id("spiffe://cluster.local/ns/test1/sa/other"));
    let err = parse_response(&id("spiffe://cluster.local/ns/test1/sa/sleep"), key, &pems)
        .err()
        .unwrap();
    assert!(
        err.contains("leaf is for spiffe://cluster.local/ns/test1/sa/other"),
        "{err}"
    );
}

#[test]
fn answer_without_root_or_with_a_foreign_root_is_refused() {
    let sleep = id("spiffe://cluster.local/ns/test1/sa/sleep");
    let (_dir, key, pems) = answer(&sleep);
    let err = parse_response(&sleep, key, &pems[..1]).err().unwrap();
    assert!(err.contains("no root"), "{err}");

    let (_dir, key, pems) = answer(&sleep);
    let (_other_dir, _other_key, other_pems) = answer(&sleep);
    let mixed = vec![pems[0].clone(), other_pems[1].clone()];
    let err = parse_response(&sleep, key, &mixed).err().unwrap();
    assert!(err.contains("does not chain"), "{err}");
}

#[test]
fn host_of_accepts_names_and_addresses() {
    assert_eq!(
        host_of("istiod.istio-system.svc:15012"),
        Some("istiod.istio-system.svc")
    );
    assert_eq!(host_of("127.0.0.1:15012"), Some("127.0.0.1"));
    assert_eq!(host_of("[::1]:15012"), Some("::1"));
    assert_eq!(host_of("istiod"), None);
}
