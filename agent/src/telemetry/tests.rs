use std::{sync::Arc, time::Duration};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::{
    flow::{WireMode, fixtures::outbound_info},
    metrics::{Metrics, RefusalReason},
};

fn scrape_value(scrape: &str, prefix: &str) -> Option<u64> {
    scrape
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn telemetry_reports_on_drop() {
    let telemetry = Arc::new(Telemetry::new(Arc::new(Metrics::new()), None));
    let conn = telemetry.open(outbound_info());
    let (source_side, mut app) = tokio::io::duplex(64);
    let mut counted = conn.count(source_side);
    app.write_all(b"0123456789").await.unwrap();
    let mut buf = [0u8; 10];
    counted.read_exact(&mut buf).await.unwrap();

    let scrape = telemetry.metrics.encode();
    assert_eq!(
        scrape_value(&scrape, "istio_tcp_connections_opened_total{"),
        Some(1)
    );
    assert_eq!(
        scrape_value(&scrape, "istio_tcp_connections_closed_total{"),
        Some(0)
    );
    assert_eq!(telemetry.connections.len(), 1);

    drop(conn);
    let scrape = telemetry.metrics.encode();
    assert_eq!(
        scrape_value(&scrape, "istio_tcp_connections_closed_total{"),
        Some(1)
    );
    assert_eq!(
        scrape_value(&scrape, "istio_tcp_received_bytes_total{"),
        Some(10)
    );
    assert!(telemetry.connections.is_empty());
}

#[test]
fn refusal_counts_with_flag_and_reason() {
    let telemetry = Telemetry::new(Arc::new(Metrics::new()), None);
    let mut info = outbound_info();
    info.mode = WireMode::Plaintext;
    telemetry.refuse(
        info,
        RefusalReason::PolicyDenied,
        "denied by default/deny-all",
    );
    let scrape = telemetry.metrics.encode();
    assert!(scrape.contains(r#"response_flags="DENY"} 1"#), "{scrape}");
    assert!(
        scrape.contains(r#"connection_security_policy="none""#),
        "{scrape}"
    );
    assert!(
        scrape.contains(
            r#"sockmesh_refused_connections_total{reason="policy_denied",mode="plaintext"} 1"#
        ),
        "{scrape}"
    );
}

#[test]
fn access_log_line_written_at_close() {
    let path = std::env::temp_dir().join(format!("sockmesh-accesslog-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let metrics = Arc::new(Metrics::new());
    let args = crate::accesslog::AccessLogArgs {
        output: crate::accesslog::Output::File(path.clone()),
        format: crate::accesslog::Format::Json,
        buffer: 16,
    };
    let log = crate::accesslog::AccessLog::start(&args, metrics.access_log_dropped()).unwrap();
    let telemetry = Arc::new(Telemetry::new(metrics, log));
    let mut conn = telemetry.open(outbound_info());
    conn.set_error("connection reset by peer");
    drop(conn);
    telemetry.refuse(
        outbound_info(),
        RefusalReason::UpstreamConnect,
        "connect timed out",
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 2 || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = std::fs::remove_file(&path);
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["error"], "connection reset by peer");
    assert_eq!(lines[0]["response_flags"], "-");
    assert_eq!(lines[1]["reason"], "upstream_connect");
    assert_eq!(lines[1]["response_flags"], "UF");
    assert!(lines[1]["id"].is_null());
}
