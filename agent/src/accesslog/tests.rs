use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::*;
use crate::flow::fixtures::outbound_info;

fn entry() -> AccessLogEntry {
    AccessLogEntry {
        end: SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_250),
        id: Some(42),
        info: Arc::new(outbound_info()),
        bytes: ByteCount {
            received: 512,
            sent: 2048,
        },
        duration: Duration::from_millis(1500),
        response_flags: ResponseFlags::None,
        reason: None,
        error: None,
    }
}

#[test]
fn text_line_has_every_field_in_order() {
    assert_eq!(
        format_text(&entry()),
        "time=2027-01-15T08:00:00.250Z id=42 direction=outbound src.workload=default/client \
         src.pod=client-7d9f src.principal=spiffe://cluster.local/ns/default/sa/client \
         src.addr=10.0.0.1:40000 dst.addr=10.0.1.2:8080 dst.original=10.96.0.10:80 \
         dst.service=server.default.svc.cluster.local dst.workload=default/server \
         dst.pod=server-5c4b dst.principal=spiffe://cluster.local/ns/default/sa/server \
         mode=mutual_tls bytes_received=512 bytes_sent=2048 duration_ms=1500 response_flags=- \
         reason=- error=-"
    );
}

#[test]
fn text_line_marks_unknowns_and_quotes_spaces() {
    let mut e = entry();
    let mut info = outbound_info();
    info.destination.original = None;
    info.destination.workload = None;
    e.info = Arc::new(info);
    e.id = None;
    e.response_flags = ResponseFlags::NoRoute;
    e.reason = Some(RefusalReason::NoOriginalDst);
    e.error = Some("no original destination recorded".into());
    let line = format_text(&e);
    assert!(line.contains(" id=- "), "{line}");
    assert!(line.contains(" dst.original=- "), "{line}");
    assert!(line.contains(" dst.workload=- dst.pod=- "), "{line}");
    assert!(
        line.contains(" response_flags=NR reason=no_original_dst "),
        "{line}"
    );
    assert!(
        line.ends_with(r#" error="no original destination recorded""#),
        "{line}"
    );
}

#[test]
fn json_line_is_one_object_with_typed_values() {
    let line = format_json(&entry());
    assert!(!line.contains('\n'));
    assert!(
        line.starts_with(r#"{"time":"2027-01-15T08:00:00.250Z","id":42,"direction""#),
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["src.workload"], "default/client");
    assert_eq!(
        v["src.principal"],
        "spiffe://cluster.local/ns/default/sa/client"
    );
    assert_eq!(v["dst.original"], "10.96.0.10:80");
    assert_eq!(v["mode"], "mutual_tls");
    assert_eq!(v["bytes_received"], 512);
    assert_eq!(v["bytes_sent"], 2048);
    assert_eq!(v["duration_ms"], 1500);
    assert!(v["reason"].is_null());
}

#[test]
fn output_flag_parses() {
    assert_eq!("off".parse::<Output>().unwrap(), Output::Off);
    assert_eq!("stdout".parse::<Output>().unwrap(), Output::Stdout);
    assert_eq!(
        "/var/log/sockmesh.log".parse::<Output>().unwrap(),
        Output::File("/var/log/sockmesh.log".into())
    );
}

#[test]
fn off_starts_no_writer() {
    let args = AccessLogArgs {
        output: Output::Off,
        format: Format::Text,
        buffer: 1,
    };
    assert!(
        AccessLog::start(&args, Default::default())
            .unwrap()
            .is_none()
    );
}
