//! `sockmesh explain`: what happens when a pod (or an outside client) connects to HOST:PORT, and
//! which resources decided it.

use std::fmt::Write as _;

use serde::Serialize;

use super::decision::{ClientBasis, Decider, Destination, Endpoint, Outbound};
use super::model::PodKey;
use super::resolver::QueryError;
use super::snapshot::Snapshot;

/// Bad `explain` input; the CLI exits non-zero on these.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("cannot parse {0:?} as HOST:PORT")]
    BadTarget(String),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("{0} is not an endpoint of this destination")]
    NotAnEndpoint(PodKey),
}

/// The answer for one endpoint (also the top-level fields, for the selected endpoint).
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    pub pod: Option<String>,
    pub address: Option<String>,
    pub in_mesh: bool,
    pub client_tls: &'static str,
    pub client_basis: ClientBasis,
    pub client_decided_by: Option<Decider>,
    pub server_mode: &'static str,
    pub server_decided_by: Option<Decider>,
    pub sni: Option<String>,
    pub subject_alt_names: Vec<String>,
    pub connects: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExplainReport {
    pub from: String,
    pub to: String,
    pub destination: Destination,
    pub app_tls: bool,
    /// The selected (or first) endpoint; absent when the destination has no endpoints.
    #[serde(flatten)]
    pub selected: Option<EndpointReport>,
    pub endpoints: Vec<EndpointReport>,
}

impl From<&Endpoint> for EndpointReport {
    fn from(e: &Endpoint) -> Self {
        Self {
            pod: e.pod.as_ref().map(PodKey::to_string),
            address: e.addr.map(|a| a.to_string()),
            in_mesh: e.in_mesh,
            client_tls: e.client.mode.as_str(),
            client_basis: e.client.basis,
            client_decided_by: e.client.decided_by.clone(),
            server_mode: e.server.mode.as_str(),
            server_decided_by: e.server.decided_by.clone(),
            sni: e.client.sni.clone(),
            subject_alt_names: e.client.subject_alt_names.clone(),
            connects: e.outcome.connects,
            reason: e.outcome.reason.clone(),
        }
    }
}

/// Splits `HOST:PORT`, accepting `[v6]:port`.
pub fn split_target(to: &str) -> Result<(String, u16), ExplainError> {
    let bad = || ExplainError::BadTarget(to.to_owned());
    let (host, port) = to.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

pub fn explain(
    snap: &Snapshot,
    from: Option<&PodKey>,
    to: &str,
    endpoint: Option<&PodKey>,
) -> Result<ExplainReport, ExplainError> {
    let (host, port) = split_target(to)?;
    let out: Outbound = snap.outbound_to_host(from, &host, port)?;
    let endpoints: Vec<EndpointReport> = out.endpoints.iter().map(EndpointReport::from).collect();
    let selected = match endpoint {
        Some(key) => {
            let i = out
                .endpoints
                .iter()
                .position(|e| e.pod.as_ref() == Some(key));
            Some(endpoints[i.ok_or_else(|| ExplainError::NotAnEndpoint(key.clone()))?].clone())
        }
        None => endpoints.first().cloned(),
    };
    Ok(ExplainReport {
        from: from.map_or_else(|| "external".to_owned(), PodKey::to_string),
        to: to.to_owned(),
        destination: out.destination,
        app_tls: out.app_tls,
        selected,
        endpoints,
    })
}

/// The short human explanation.
pub fn render(r: &ExplainReport) -> String {
    let mut s = String::new();
    let dest = match &r.destination {
        Destination::Service { fqdn, port, .. } => format!("service {fqdn}:{port}"),
        Destination::Pod { pod, port } => format!("pod {pod} port {port}"),
        Destination::ServiceEntry {
            host,
            port,
            location,
            ..
        } => format!("service entry {host}:{port} ({location:?})"),
        Destination::External { host, port } => format!("external {host}:{port} (passthrough)"),
    };
    let _ = writeln!(
        s,
        "{} -> {}: {dest}{}",
        r.from,
        r.to,
        if r.app_tls { ", application TLS" } else { "" }
    );
    if r.endpoints.is_empty() {
        let _ = writeln!(s, "  no endpoints");
    }
    for e in &r.endpoints {
        let who = e
            .pod
            .clone()
            .or_else(|| e.address.clone())
            .unwrap_or_else(|| "endpoint".into());
        let by = |d: &Option<Decider>| {
            d.as_ref().map_or_else(String::new, |d| match d.port {
                Some(p) => format!(" by {} (port {p})", d.resource),
                None => format!(" by {}", d.resource),
            })
        };
        let _ = writeln!(
            s,
            "  {who}{}: client {}{}, server {}{}{} => {}",
            if e.in_mesh { "" } else { " [outside mesh]" },
            e.client_tls,
            match &e.client_decided_by {
                None => format!(" ({:?})", e.client_basis),
                some => by(some),
            },
            e.server_mode,
            by(&e.server_decided_by),
            e.sni
                .as_ref()
                .map_or_else(String::new, |sni| format!(", SNI {sni}")),
            match &e.reason {
                None => "connects".to_owned(),
                Some(why) => format!("FAILS: {why}"),
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::resolver::tests::{SEEDS, snapshot};

    #[test]
    fn json_has_contract_fields() {
        let snap = snapshot(SEEDS);
        let from: PodKey = "test1/sleep".parse().unwrap();
        let r = explain(&snap, Some(&from), "httpbin.test2:8000", None).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["client_tls"], "ISTIO_MUTUAL");
        assert_eq!(v["server_mode"], "STRICT");
        assert_eq!(v["connects"], true);
        assert_eq!(
            v["sni"],
            "outbound_.8000_._.httpbin.test2.svc.cluster.local"
        );
        assert_eq!(v["client_decided_by"]["kind"], "DestinationRule");
        assert_eq!(v["server_decided_by"]["kind"], "MeshPolicy");
        assert_eq!(v["endpoints"][0]["pod"], "test2/httpbin");
        let r = explain(&snap, None, "httpbin.test2:8000", None).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap()["client_tls"], "DISABLE");
        assert!(render(&r).contains("FAILS: plaintext to a STRICT server"));
    }

    #[test]
    fn bad_input_is_an_error() {
        let snap = snapshot(SEEDS);
        let from: PodKey = "test1/sleep".parse().unwrap();
        for to in ["httpbin", "httpbin:x", ":80"] {
            assert!(explain(&snap, Some(&from), to, None).is_err(), "{to}");
        }
        let other: PodKey = "test3/sleep".parse().unwrap();
        assert!(explain(&snap, Some(&from), "httpbin.test2:8000", Some(&other)).is_err());
        assert_eq!(
            split_target("[fd00::1]:443").unwrap(),
            ("fd00::1".to_owned(), 443)
        );
    }
}
