use super::*;
use crate::policy::decision::ClientBasis;

fn ca_pem(name: &str) -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

fn simple(ca: CertSource) -> ClientTls {
    let mut tls = ClientTls::plaintext(ClientBasis::DestinationRule);
    tls.mode = TlsMode::Simple;
    tls.ca_certificates = Some(ca);
    tls
}

#[tokio::test]
async fn one_config_per_setting_and_none_for_other_settings() {
    let credentials = Credentials::default();
    let pem = Arc::new(ca_pem("a").into_bytes());
    let a = credentials
        .config(&simple(CertSource::Pem(pem.clone())))
        .await
        .unwrap();
    let b = credentials
        .config(&simple(CertSource::Pem(pem.clone())))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let mut other = simple(CertSource::Pem(pem));
    other.subject_alt_names = vec!["x".into()];
    assert!(!Arc::ptr_eq(&a, &credentials.config(&other).await.unwrap()));
}

#[tokio::test]
async fn files_are_read_once_and_again_only_when_they_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, ca_pem("first")).unwrap();
    let tls = simple(CertSource::File(path.display().to_string()));
    let credentials = Credentials::default();
    let first = credentials.config(&tls).await.unwrap();

    // Within the recheck interval nothing is read: even a broken file does not matter yet.
    std::fs::write(&path, "not pem").unwrap();
    assert!(Arc::ptr_eq(
        &first,
        &credentials.config(&tls).await.unwrap()
    ));

    // After it, a changed file is read again: broken, it is an error naming the field...
    tokio::time::sleep(RECHECK + Duration::from_millis(50)).await;
    let err = credentials.config(&tls).await.err().unwrap();
    assert!(err.to_string().contains("caCertificates"), "{err}");

    // ...and fixed, a new config.
    std::fs::write(&path, ca_pem("second")).unwrap();
    let second = credentials.config(&tls).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &second));

    // An unchanged file keeps the config past the recheck interval.
    tokio::time::sleep(RECHECK + Duration::from_millis(50)).await;
    assert!(Arc::ptr_eq(
        &second,
        &credentials.config(&tls).await.unwrap()
    ));
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let credentials = Credentials::default();
    let pem = Arc::new(ca_pem("a").into_bytes());
    for i in 0..MAX_ENTRIES + 10 {
        let mut tls = simple(CertSource::Pem(pem.clone()));
        tls.subject_alt_names = vec![format!("san-{i}")];
        credentials.config(&tls).await.unwrap();
    }
    assert_eq!(credentials.cache.lock().unwrap().len(), MAX_ENTRIES);
}
