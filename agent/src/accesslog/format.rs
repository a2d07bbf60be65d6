//! Rendering of an access-log entry. Text and JSON share one ordered field list so they never
//! drift apart.
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

use super::AccessLogEntry;
use crate::flow::WorkloadRef;

fn workload(w: Option<&WorkloadRef>) -> (Value, Value) {
    match w {
        Some(w) => (
            Value::from(format!("{}/{}", w.namespace, w.name)),
            Value::from(w.pod.as_str()),
        ),
        None => (Value::Null, Value::Null),
    }
}

fn opt<T: ToString>(v: Option<T>) -> Value {
    v.map_or(Value::Null, |v| Value::from(v.to_string()))
}

/// `(key, value)` in output order; `Null` means unknown.
fn fields(e: &AccessLogEntry) -> Vec<(&'static str, Value)> {
    let i = &e.info;
    let (src_wl, src_pod) = workload(i.source.workload.as_ref());
    let (dst_wl, dst_pod) = workload(i.destination.workload.as_ref());
    vec![
        (
            "time",
            Value::from(humantime::format_rfc3339_millis(e.end).to_string()),
        ),
        ("id", e.id.map_or(Value::Null, Value::from)),
        ("direction", Value::from(i.direction.as_str())),
        ("src.workload", src_wl),
        ("src.pod", src_pod),
        ("src.principal", opt(i.source.principal.as_deref())),
        ("src.addr", Value::from(i.source.addr.to_string())),
        ("dst.addr", opt(i.destination.endpoint)),
        ("dst.original", opt(i.destination.original)),
        ("dst.service", opt(i.destination.service.as_deref())),
        ("dst.workload", dst_wl),
        ("dst.pod", dst_pod),
        ("dst.principal", opt(i.destination.principal.as_deref())),
        ("mode", Value::from(i.mode.as_str())),
        ("bytes_received", Value::from(e.bytes.received)),
        ("bytes_sent", Value::from(e.bytes.sent)),
        (
            "duration_ms",
            Value::from(u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX)),
        ),
        ("response_flags", Value::from(e.response_flags.as_str())),
        ("reason", opt(e.reason.map(|r| r.as_str()))),
        ("error", opt(e.error.as_deref())),
    ]
}

/// `key=value` pairs separated by spaces; unknown values are `-`, values with spaces or quotes
/// are quoted.
pub fn format_text(e: &AccessLogEntry) -> String {
    let mut line = String::with_capacity(384);
    for (i, (key, value)) in fields(e).into_iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(key);
        line.push('=');
        match value {
            Value::Null => line.push('-'),
            Value::String(s) if s.contains([' ', '"', '=']) || s.is_empty() => {
                line.push_str(&format!("{s:?}"))
            }
            Value::String(s) => line.push_str(&s),
            other => line.push_str(&other.to_string()),
        }
    }
    line
}

/// One JSON object with the fields in output order.
pub fn format_json(e: &AccessLogEntry) -> String {
    let mut out = Vec::with_capacity(512);
    // Serializing strings and numbers into a Vec cannot fail.
    write_json(&mut out, &fields(e)).expect("JSON access-log line");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

fn write_json(out: &mut Vec<u8>, fields: &[(&str, Value)]) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::new(out);
    let mut map = ser.serialize_map(Some(fields.len()))?;
    for (k, v) in fields {
        map.serialize_entry(k, v)?;
    }
    map.end()
}
