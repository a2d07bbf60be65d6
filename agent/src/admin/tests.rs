use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use hyper::{Method, StatusCode};
use tracing_subscriber::{EnvFilter, layer::SubscriberExt};

use super::{client::request, *};
use crate::{
    flow::fixtures::outbound_info,
    logging::{self, LogControl},
    metrics::Metrics,
    policy::settings::{MeshConfig, SettingFlags, SettingsReport},
    telemetry::Telemetry,
};

struct FakeSource;

pub(crate) fn workload() -> WorkloadStatus {
    WorkloadStatus {
        namespace: "default".into(),
        name: "client-7d9f".into(),
        service_account: "client".into(),
        identity: Some("spiffe://cluster.local/ns/default/sa/client".into()),
        ips: vec!["10.0.0.1".parse().unwrap()],
        cgroup_ids: vec![4242, 4243],
        netns: "/run/netns/client".into(),
        state: EnrollmentState::Enrolled,
        detail: None,
    }
}

pub(crate) fn certificate() -> CertificateInfo {
    CertificateInfo {
        identity: "spiffe://cluster.local/ns/default/sa/client".into(),
        serial: "1f2e3d".into(),
        issuer: "CN=sockmesh root".into(),
        not_before: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_086_400),
        sans: vec!["spiffe://cluster.local/ns/default/sa/client".into()],
        workloads: vec!["default/client-7d9f".into()],
    }
}

impl AdminSource for FakeSource {
    fn config_dump(&self) -> serde_json::Value {
        serde_json::json!({"workloads": [{"name": "client-7d9f", "inbound_mode": "strict"}]})
    }

    fn workloads(&self) -> Vec<WorkloadStatus> {
        vec![workload()]
    }

    fn certificates(&self) -> Vec<CertificateInfo> {
        vec![certificate()]
    }
}

/// Trust domain from a flag, auto mTLS from the ConfigMap, root namespace by default.
pub(crate) fn settings_report() -> SettingsReport {
    let flags = SettingFlags {
        trust_domain: Some("corp.example".into()),
        cluster_domain: "cluster.local".into(),
        ..SettingFlags::default()
    };
    let mesh = MeshConfig {
        enable_auto_mtls: Some(false),
        trust_domain: Some("ignored.example".into()),
        ..MeshConfig::default()
    };
    SettingsReport::resolve(&flags, Some(&mesh)).with_configmap("istio-system", "istio")
}

fn local_args() -> AdminArgs {
    let any = "127.0.0.1:0".parse().unwrap();
    AdminArgs {
        admin: any,
        metrics: any,
        readiness: any,
    }
}

pub(crate) struct Running {
    pub servers: Servers,
    pub telemetry: Arc<Telemetry>,
    pub readiness: Arc<Readiness>,
}

/// All three servers on loopback with free ports, serving the fake source.
pub(crate) async fn start(logging: Option<LogControl>) -> Running {
    let telemetry = Arc::new(Telemetry::new(Arc::new(Metrics::new()), None));
    let readiness = Arc::new(Readiness::default());
    let state = AdminState {
        source: Arc::new(FakeSource),
        telemetry: telemetry.clone(),
        logging,
        readiness: readiness.clone(),
        settings: settings_report().into_handle(),
    };
    let servers = Servers::start(&local_args(), state).await.unwrap();
    Running {
        servers,
        telemetry,
        readiness,
    }
}

async fn call(addr: std::net::SocketAddr, method: Method, path: &str) -> (StatusCode, String) {
    request(&addr.to_string(), method, path).await.unwrap()
}

#[tokio::test]
async fn admin_refuses_non_loopback_address() {
    let state = AdminState {
        source: Arc::new(FakeSource),
        telemetry: Arc::new(Telemetry::new(Arc::new(Metrics::new()), None)),
        logging: None,
        readiness: Arc::default(),
        settings: settings_report().into_handle(),
    };
    let mut args = local_args();
    args.admin = "0.0.0.0:0".parse().unwrap();
    let err = Servers::start(&args, state).await.err().unwrap();
    assert!(matches!(err, AdminError::NotLoopback(_)), "{err}");
    assert!(
        err.to_string()
            .contains("must never be reachable from pods")
    );
}

#[tokio::test]
async fn admin_endpoints_serve_json() {
    let running = start(None).await;
    let admin = running.servers.admin_addr;
    let _conn = running.telemetry.open(outbound_info());

    let (status, body) = call(admin, Method::GET, "/config_dump").await;
    assert_eq!(status, StatusCode::OK);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["workloads"][0]["inbound_mode"], "strict");

    let (_, body) = call(admin, Method::GET, "/workloads").await;
    let workloads: Vec<WorkloadStatus> = serde_json::from_str(&body).unwrap();
    assert_eq!(workloads, vec![workload()]);
    assert!(body.contains(r#""state": "enrolled""#), "{body}");

    let (_, body) = call(admin, Method::GET, "/mesh_config").await;
    let mesh: SettingsReport = serde_json::from_str(&body).unwrap();
    assert_eq!(mesh, settings_report());
    assert!(body.contains(r#""source": "configmap""#), "{body}");

    let (_, body) = call(admin, Method::GET, "/certs").await;
    assert!(
        body.contains(r#""not_after": "2027-01-16T08:00:00Z""#),
        "{body}"
    );
    let certs: Vec<CertificateInfo> = serde_json::from_str(&body).unwrap();
    assert_eq!(certs, vec![certificate()]);

    let (_, body) = call(admin, Method::GET, "/connections").await;
    let conns: Vec<crate::connections::ConnectionSnapshot> = serde_json::from_str(&body).unwrap();
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].info, outbound_info());

    let (status, body) = call(admin, Method::GET, "/stats/prometheus").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("istio_tcp_connections_opened_total{"),
        "{body}"
    );

    let (status, _) = call(admin, Method::GET, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(admin, Method::POST, "/workloads").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn metrics_port_serves_scrape() {
    let running = start(None).await;
    let _conn = running.telemetry.open(outbound_info());
    for path in ["/metrics", "/stats/prometheus"] {
        let (status, body) = call(running.servers.metrics_addr, Method::GET, path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains(r#"istio_tcp_connections_opened_total{reporter="source""#));
    }
    let (status, _) = call(running.servers.metrics_addr, Method::GET, "/config_dump").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn readiness_turns_ready_when_every_check_holds() {
    let running = start(None).await;
    let ready = running.servers.readiness_addr;
    let (status, body) = call(ready, Method::GET, "/healthz/live").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "live\n"),
        "live while not ready"
    );
    let (status, body) = call(ready, Method::GET, "/healthz/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        "not ready: waiting for programs attached, config synced, certificates issued\n"
    );

    running.readiness.set(Check::ProgramsAttached, true);
    running.readiness.set(Check::ConfigSynced, true);
    let (status, body) = call(ready, Method::GET, "/healthz/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "not ready: waiting for certificates issued\n");

    running.readiness.set(Check::CertificatesIssued, true);
    let (status, body) = call(ready, Method::GET, "/healthz/ready").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
}

#[tokio::test]
async fn logging_level_changes_at_run_time() {
    let (layer, control) = logging::reloadable(EnvFilter::new("info"));
    // Keeps the reload layer alive for the handle; not installed globally.
    let _subscriber = tracing_subscriber::registry().with(layer);
    let running = start(Some(control.clone())).await;
    let admin = running.servers.admin_addr;
    let filter = |body: &str| {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["filter"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let (status, body) = call(admin, Method::GET, "/logging").await;
    assert_eq!((status, filter(&body)), (StatusCode::OK, "info".to_owned()));

    let (status, body) = call(admin, Method::POST, "/logging?level=debug").await;
    assert_eq!(
        (status, filter(&body)),
        (StatusCode::OK, "debug".to_owned())
    );
    assert_eq!(control.current(), "debug");

    let (status, body) = call(
        admin,
        Method::PUT,
        "/logging?filter=warn%2Csockmesh_agent%3Dtrace",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(filter(&body).contains("sockmesh_agent=trace"), "{body}");

    let (status, body) = call(admin, Method::POST, "/logging?level=loud").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("invalid level"), "{body}");

    let (status, _) = call(admin, Method::POST, "/logging").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = call(admin, Method::POST, "/logging?reset").await;
    assert_eq!((status, filter(&body)), (StatusCode::OK, "info".to_owned()));
}

#[tokio::test]
async fn logging_without_control_is_unavailable() {
    let running = start(None).await;
    let (status, _) = call(running.servers.admin_addr, Method::GET, "/logging").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}
