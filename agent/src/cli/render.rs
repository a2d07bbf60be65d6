//! Table views of the admin API's answers.
use std::time::{Duration, SystemTime};

use super::table::Table;
use crate::{
    admin::{CertificateInfo, WorkloadStatus},
    connections::ConnectionSnapshot,
    flow::{Direction, WorkloadRef},
    policy::settings::{SettingsReport, Source},
};

const NONE: &str = "-";

fn or_dash(v: Option<&str>) -> String {
    v.unwrap_or(NONE).to_owned()
}

fn join<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return NONE.to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Each meshConfig setting, its value and where it came from.
pub fn mesh_settings(report: &SettingsReport) -> String {
    let configmap = report.configmap.as_deref().unwrap_or("?");
    let source = |s: Source| match s {
        Source::ConfigMap => format!("configmap {configmap}"),
        other => other.as_str().to_owned(),
    };
    let mut t = Table::new(&["SETTING", "VALUE", "SOURCE"]);
    let mut trust_domain = source(report.trust_domain.source);
    if let Some(next) = &report.trust_domain_after_restart {
        trust_domain.push_str(&format!("; configmap has {next}, applied after a restart"));
    }
    t.row(vec![
        "trust domain".into(),
        report.trust_domain.value.clone(),
        trust_domain,
    ]);
    t.row(vec![
        "root namespace".into(),
        report.root_namespace.value.clone(),
        source(report.root_namespace.source),
    ]);
    t.row(vec![
        "auto mTLS".into(),
        report.auto_mtls.value.to_string(),
        source(report.auto_mtls.source),
    ]);
    let mut out = t.render();
    if let (Some(cm), false) = (&report.configmap, report.configmap_found) {
        out.push_str(&format!("(meshConfig ConfigMap {cm} not found)\n"));
    }
    out
}

pub fn workloads(list: &[WorkloadStatus]) -> String {
    let mut t = Table::new(&[
        "NAMESPACE",
        "POD",
        "STATE",
        "IDENTITY",
        "IPS",
        "CGROUPS",
        "NETNS",
        "DETAIL",
    ]);
    for w in list {
        t.row(vec![
            w.namespace.clone(),
            w.name.clone(),
            w.state.as_str().to_owned(),
            or_dash(w.identity.as_deref()),
            join(&w.ips),
            join(&w.cgroup_ids),
            w.netns.clone(),
            or_dash(w.detail.as_deref()),
        ]);
    }
    t.render()
}

/// "in 3h 5m" / "2m ago", to the minute above an hour and to the second below.
fn relative(t: SystemTime, now: SystemTime) -> String {
    let (d, future) = match t.duration_since(now) {
        Ok(d) => (d, true),
        Err(e) => (e.duration(), false),
    };
    let secs = d.as_secs();
    let rounded = if secs >= 3600 { secs - secs % 60 } else { secs };
    let text = humantime::format_duration(Duration::from_secs(rounded)).to_string();
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

pub fn certs(list: &[CertificateInfo], now: SystemTime) -> String {
    let mut t = Table::new(&[
        "IDENTITY",
        "SERIAL",
        "ISSUER",
        "NOT BEFORE",
        "NOT AFTER",
        "EXPIRES",
        "WORKLOADS",
    ]);
    for c in list {
        let expires = if c.not_after <= now {
            format!("EXPIRED {}", relative(c.not_after, now))
        } else {
            relative(c.not_after, now)
        };
        t.row(vec![
            c.identity.clone(),
            c.serial.clone(),
            c.issuer.clone(),
            humantime::format_rfc3339_seconds(c.not_before).to_string(),
            humantime::format_rfc3339_seconds(c.not_after).to_string(),
            expires,
            join(&c.workloads),
        ]);
    }
    t.render()
}

fn pod(w: Option<&WorkloadRef>) -> Option<String> {
    w.map(|w| format!("{}/{}", w.namespace, w.pod))
}

pub fn connections(list: &[ConnectionSnapshot]) -> String {
    let mut t = Table::new(&[
        "ID",
        "DIR",
        "SOURCE",
        "DESTINATION",
        "SERVICE",
        "PEER IDENTITY",
        "MODE",
        "AGE",
        "RECEIVED",
        "SENT",
    ]);
    for c in list {
        let i = &c.info;
        let source = pod(i.source.workload.as_ref()).unwrap_or_else(|| i.source.addr.to_string());
        let destination = pod(i.destination.workload.as_ref())
            .or_else(|| i.destination.original.map(|a| a.to_string()))
            .or_else(|| i.destination.endpoint.map(|a| a.to_string()));
        // The identity of the other side, as this node sees it.
        let peer = match i.direction {
            Direction::Outbound => i.destination.principal.as_deref(),
            Direction::Inbound => i.source.principal.as_deref(),
        };
        t.row(vec![
            c.id.to_string(),
            i.direction.as_str().to_owned(),
            source,
            or_dash(destination.as_deref()),
            or_dash(i.destination.service.as_deref()),
            or_dash(peer),
            i.mode.as_str().to_owned(),
            humantime::format_duration(Duration::from_secs(c.duration_ms / 1000)).to_string(),
            c.bytes.received.to_string(),
            c.bytes.sent.to_string(),
        ]);
    }
    t.render()
}
