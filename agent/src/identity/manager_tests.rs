use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::identity::issuer::{DEFAULT_TTL, test_issuer};

fn id(s: &str) -> SpiffeId {
    format!("spiffe://cluster.local/ns/{s}/sa/{s}")
        .parse()
        .unwrap()
}

fn manager(ttl: Duration) -> (tempfile::TempDir, CertManager) {
    let (dir, issuer) = test_issuer();
    let roots = issuer.ca().roots();
    (dir, CertManager::new(Arc::new(issuer), roots, ttl))
}

#[tokio::test]
async fn refcount_keeps_identity_until_last_release() {
    let (_dir, mgr) = manager(DEFAULT_TTL);
    let a = id("a");
    let first = mgr.acquire(&a).unwrap();
    let second = mgr.acquire(&a).unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "second pod must share the first pod's identity"
    );
    assert!(!mgr.release(&a));
    assert!(mgr.get(&a).is_some());
    assert!(mgr.release(&a));
    assert!(mgr.get(&a).is_none());
    assert!(!mgr.release(&a));
    assert!(mgr.cert_infos().is_empty());
}

#[tokio::test]
async fn identities_get_distinct_certs_and_configs() {
    let (_dir, mgr) = manager(DEFAULT_TTL);
    let a = mgr.acquire(&id("a")).unwrap();
    let b = mgr.acquire(&id("b")).unwrap();
    let (ca, cb) = (a.current(), b.current());
    assert_ne!(ca.info().serial, cb.info().serial);
    assert_eq!(ca.info().sans, vec![id("a").to_string()]);
    assert_eq!(cb.info().sans, vec![id("b").to_string()]);
    assert!(!Arc::ptr_eq(&a.server_config(), &b.server_config()));
    assert!(
        Arc::ptr_eq(&a.client_config(), &a.client_config()),
        "configs are built once per generation, not per call"
    );
    let infos = mgr.cert_infos();
    assert_eq!(
        infos.iter().map(|i| i.identity.clone()).collect::<Vec<_>>(),
        vec![id("a").to_string(), id("b").to_string()]
    );
    assert!(infos[0].issuer.contains("sockmesh mesh root CA"));
}

/// Fails the calls numbered in `failing` (1-based), delegating the rest to a real issuer.
struct FlakyIssuer {
    inner: Issuer,
    calls: AtomicUsize,
    failing: std::ops::RangeInclusive<usize>,
}

impl IssueCert for FlakyIssuer {
    fn issue(&self, id: &SpiffeId, ttl: Duration) -> Result<WorkloadCert, IssueError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.failing.contains(&call) {
            return Err(IssueError::Sign {
                id: id.clone(),
                why: "CA unavailable".into(),
            });
        }
        self.inner.issue(id, ttl)
    }
}

async fn wait_for_serial_change(identity: &WorkloadIdentity, old: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if identity.current().info().serial != old {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn renews_at_half_life_and_survives_failures() {
    let (_dir, issuer) = test_issuer();
    let roots = issuer.ca().roots();
    let flaky = Arc::new(FlakyIssuer {
        inner: issuer,
        calls: AtomicUsize::new(0),
        failing: 2..=3,
    });
    let mgr = CertManager::new(flaky.clone(), roots, Duration::from_secs(2));
    let identity = mgr.acquire(&id("a")).unwrap();
    let first = identity.current().info().serial.clone();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while flaky.calls.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no renewal attempt at half-life"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Read the serial before the call count: if the successful 4th call had not started by then,
    // the serial seen must still be the first one.
    let serial = identity.current().info().serial.clone();
    if flaky.calls.load(Ordering::SeqCst) < 4 {
        assert_eq!(serial, first, "old cert kept on failure");
    }

    assert!(wait_for_serial_change(&identity, &first, Duration::from_secs(4)).await);
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn release_stops_renewal() {
    let (_dir, issuer) = test_issuer();
    let roots = issuer.ca().roots();
    let counting = Arc::new(FlakyIssuer {
        inner: issuer,
        calls: AtomicUsize::new(0),
        failing: 0..=0,
    });
    let mgr = CertManager::new(counting.clone(), roots, Duration::from_millis(400));
    mgr.acquire(&id("a")).unwrap();
    assert!(mgr.release(&id("a")));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
}
