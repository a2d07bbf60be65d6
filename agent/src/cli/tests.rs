use std::time::{Duration, SystemTime};

use super::*;
use crate::{
    admin::tests::{certificate, start, workload},
    connections::ConnectionSnapshot,
    flow::ByteCount,
    flow::fixtures::outbound_info,
};

fn args(admin: std::net::SocketAddr, json: bool) -> ClientArgs {
    ClientArgs {
        admin: admin.to_string(),
        json,
    }
}

#[test]
fn table_aligns_columns() {
    let mut t = table::Table::new(&["ID", "NAME", "STATE"]);
    t.row(vec!["1".into(), "a-long-name".into(), "ok".into()]);
    t.row(vec!["100".into(), "b".into(), "failed".into()]);
    assert_eq!(
        t.render(),
        "ID   NAME         STATE\n\
         1    a-long-name  ok\n\
         100  b            failed\n"
    );
}

#[test]
fn workloads_table() {
    let mut pending = workload();
    pending.name = "server-5c4b".into();
    pending.identity = None;
    pending.state = crate::admin::EnrollmentState::Pending;
    pending.detail = Some("waiting for certificate".into());
    pending.cgroup_ids.clear();
    let out = render::workloads(&[workload(), pending]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "NAMESPACE  POD          STATE     IDENTITY                                     IPS       CGROUPS    NETNS              DETAIL"
    );
    assert_eq!(
        lines[1],
        "default    client-7d9f  enrolled  spiffe://cluster.local/ns/default/sa/client  10.0.0.1  4242,4243  /run/netns/client  -"
    );
    assert_eq!(
        lines[2],
        "default    server-5c4b  pending   -                                            10.0.0.1  -          /run/netns/client  waiting for certificate"
    );
}

#[test]
fn settings_table_says_where_each_value_came_from() {
    let mut report = crate::admin::tests::settings_report();
    report.trust_domain_after_restart = Some("next.example".into());
    let out = render::mesh_settings(&report);
    assert_eq!(
        out,
        "SETTING         VALUE         SOURCE\n\
         trust domain    corp.example  flag; configmap has next.example, applied after a restart\n\
         root namespace  istio-system  default\n\
         auto mTLS       false         configmap istio-system/istio\n"
    );
}

#[test]
fn certs_table_shows_expiry() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + 3_600 + 30);
    let out = render::certs(&[certificate()], now);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("IDENTITY  "), "{out}");
    assert!(lines[1].contains("  1f2e3d  CN=sockmesh root  2027-01-15T08:00:00Z  2027-01-16T08:00:00Z  in 22h 59m  default/client-7d9f"), "{out}");

    let later = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_086_400 + 90);
    let out = render::certs(&[certificate()], later);
    assert!(out.contains("EXPIRED 1m 30s ago"), "{out}");
}

#[test]
fn connections_table_shows_peer_identity_and_mode() {
    let snapshot = ConnectionSnapshot {
        id: 7,
        info: outbound_info(),
        started: "2027-01-15T08:00:00Z".into(),
        duration_ms: 65_000,
        bytes: ByteCount {
            received: 10,
            sent: 20,
        },
    };
    let out = render::connections(&[snapshot]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "ID  DIR       SOURCE               DESTINATION          SERVICE                           PEER IDENTITY                                MODE        AGE    RECEIVED  SENT"
    );
    assert_eq!(
        lines[1],
        "7   outbound  default/client-7d9f  default/server-5c4b  server.default.svc.cluster.local  spiffe://cluster.local/ns/default/sa/server  mutual_tls  1m 5s  10        20"
    );
}

#[test]
fn not_running_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = status(&args(addr, false)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no sockmesh agent is answering on {addr}: is it running? (sockmesh run ...)")
    );
}

#[test]
fn views_against_a_running_admin_api() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let running = rt.block_on(start(None));
    let _conn = running.telemetry.open(outbound_info());
    let admin = running.servers.admin_addr;

    let table = fetch_view(&args(admin, false), "/workloads", |w: Vec<_>| {
        render::workloads(&w)
    })
    .unwrap();
    assert!(table.starts_with("NAMESPACE  POD"), "{table}");
    assert!(table.contains("client-7d9f  enrolled"), "{table}");

    let raw = fetch_view(&args(admin, true), "/workloads", |w: Vec<_>| {
        render::workloads(&w)
    })
    .unwrap();
    let parsed: Vec<crate::admin::WorkloadStatus> = serde_json::from_str(&raw).unwrap();
    assert_eq!(parsed, vec![workload()]);

    let status = status_view(&args(admin, false)).unwrap();
    assert!(status.starts_with("SETTING "), "{status}");
    assert!(status.contains("\nNAMESPACE  POD"), "{status}");
    let raw: serde_json::Value =
        serde_json::from_str(&status_view(&args(admin, true)).unwrap()).unwrap();
    assert_eq!(raw["mesh_config"]["auto_mtls"]["source"], "configmap");
    assert_eq!(raw["workloads"][0]["name"], "client-7d9f");

    let table = fetch_view(&args(admin, false), "/connections", |c: Vec<_>| {
        render::connections(&c)
    })
    .unwrap();
    assert!(table.contains("outbound  default/client-7d9f"), "{table}");
    certs(&args(admin, false)).unwrap();
    connections(&args(admin, true)).unwrap();
    drop(running);
}
