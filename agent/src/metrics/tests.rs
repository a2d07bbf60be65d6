use super::*;
use crate::flow::{ByteCount, Direction, WireMode, fixtures::outbound_info};

const OPENED_SOURCE: &str = concat!(
    r#"istio_tcp_connections_opened_total{reporter="source","#,
    r#"source_workload="client",source_workload_namespace="default","#,
    r#"source_principal="spiffe://cluster.local/ns/default/sa/client","#,
    r#"destination_workload="server",destination_workload_namespace="default","#,
    r#"destination_service="server.default.svc.cluster.local","#,
    r#"destination_principal="spiffe://cluster.local/ns/default/sa/server","#,
    r#"connection_security_policy="mutual_tls",response_flags="-"} 2"#,
);

#[test]
fn istio_tcp_metrics_have_istio_names_and_labels() {
    let metrics = Metrics::new();
    let labels = ConnectionLabels::new(&outbound_info(), ResponseFlags::None);
    let mut a = metrics.open_connection(&labels);
    let b = metrics.open_connection(&labels);
    a.record(ByteCount {
        received: 100,
        sent: 7,
    });
    a.record(ByteCount {
        received: 150,
        sent: 7,
    });
    drop(a);
    drop(b);

    let scrape = metrics.encode();
    assert!(scrape.contains(OPENED_SOURCE), "{scrape}");
    for name in [
        "# TYPE istio_tcp_connections_opened counter",
        "# TYPE istio_tcp_connections_closed counter",
        "# TYPE istio_tcp_received_bytes counter",
        "# TYPE istio_tcp_sent_bytes counter",
    ] {
        assert!(scrape.contains(name), "{name} missing:\n{scrape}");
    }
    let line = |name: &str| {
        scrape
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{scrape}"))
            .to_owned()
    };
    assert!(line("istio_tcp_connections_closed_total{").ends_with(" 2"));
    assert!(line("istio_tcp_received_bytes_total{").ends_with(" 150"));
    assert!(line("istio_tcp_sent_bytes_total{").ends_with(" 7"));
    assert!(!scrape.contains("_total_total"));
}

#[test]
fn inbound_unknown_peer_reports_destination_and_unknown() {
    let mut info = outbound_info();
    info.direction = Direction::Inbound;
    info.mode = WireMode::Plaintext;
    info.source.workload = None;
    info.source.principal = None;
    let labels = ConnectionLabels::new(&info, ResponseFlags::None);
    assert_eq!(labels.reporter, Reporter::destination);
    assert_eq!(labels.source_workload, UNKNOWN);
    assert_eq!(labels.source_principal, UNKNOWN);
    assert_eq!(labels.connection_security_policy, SecurityPolicy::none);

    let metrics = Metrics::new();
    drop(metrics.open_connection(&labels));
    let scrape = metrics.encode();
    assert!(scrape.contains(r#"{reporter="destination",source_workload="unknown","#));
}

#[test]
fn refusal_reasons_map_to_documented_flags() {
    let flags: Vec<&str> = [
        RefusalReason::NoOriginalDst,
        RefusalReason::UnknownWorkload,
        RefusalReason::WorkloadMismatch,
        RefusalReason::PolicyDenied,
        RefusalReason::PlaintextRejected,
        RefusalReason::UpstreamConnect,
        RefusalReason::UpstreamHandshake,
        RefusalReason::DownstreamHandshake,
    ]
    .iter()
    .map(|r| r.response_flags().as_str())
    .collect();
    assert_eq!(flags, ["NR", "NR", "NR", "DENY", "DENY", "UF", "UF", "DC"]);
}

#[test]
fn sockmesh_metrics_are_exposed() {
    let metrics = Metrics::new();
    metrics.handshake_failed("unknown_ca");
    metrics.connection_refused(
        &ConnectionLabels::new(&outbound_info(), ResponseFlags::NoRoute),
        RefusalReason::NoOriginalDst,
        WireMode::Plaintext,
    );
    metrics.set_certificate_expiry("spiffe://cluster.local/ns/default/sa/client", 1_900_000_000);
    metrics.set_certificate_expiry("spiffe://cluster.local/ns/default/sa/gone", 1);
    metrics.remove_certificate("spiffe://cluster.local/ns/default/sa/gone");
    metrics.set_enrolled_workloads(3);
    metrics.config_reloaded(ReloadResult::success);
    metrics.config_reloaded(ReloadResult::failure);
    metrics.access_log_dropped().inc();
    metrics.set_bpf_events(Box::new(|| {
        vec![("connect_redirected", 5), ("conns_full", 0)]
    }));
    metrics.set_bpf_map_entries(Box::new(|| vec![("sockmesh_conns", 12)]));

    let scrape = metrics.encode();
    for expected in [
        r#"sockmesh_handshake_failures_total{reason="unknown_ca"} 1"#,
        r#"sockmesh_refused_connections_total{reason="no_original_dst",mode="plaintext"} 1"#,
        r#"sockmesh_certificate_expiry_seconds{identity="spiffe://cluster.local/ns/default/sa/client"} 1900000000"#,
        "sockmesh_enrolled_workloads 3",
        r#"sockmesh_config_reloads_total{result="success"} 1"#,
        r#"sockmesh_config_reloads_total{result="failure"} 1"#,
        "sockmesh_access_log_dropped_lines_total 1",
        "# TYPE sockmesh_bpf_events counter",
        r#"sockmesh_bpf_events_total{event="connect_redirected"} 5"#,
        r#"sockmesh_bpf_events_total{event="conns_full"} 0"#,
        "# TYPE sockmesh_bpf_map_entries gauge",
        r#"sockmesh_bpf_map_entries{map="sockmesh_conns"} 12"#,
        r#"response_flags="NR"} 1"#,
    ] {
        assert!(scrape.contains(expected), "{expected} missing:\n{scrape}");
    }
    assert!(!scrape.contains("sa/gone"), "{scrape}");
    assert!(scrape.ends_with("# EOF\n"));
}

#[test]
fn bpf_metrics_absent_until_a_reader_is_set() {
    let scrape = Metrics::new().encode();
    assert!(!scrape.contains("sockmesh_bpf_events"));
    assert!(!scrape.contains("sockmesh_bpf_map_entries"));
}
