//! `sockmesh explain`: what happens when a pod (or an outside client) connects to HOST:PORT, and
//! which resources decided it.
//!
//! Authorization is the decision the endpoint's proxy takes with what the connection actually
//! arrives with: the client's SPIFFE id when it arrives as mesh mTLS (client mode ISTIO_MUTUAL),
//! no identity otherwise; the client pod's IP (or `--source-ip`, which an `external` client needs
//! for `ipBlocks` to mean anything: without it the source is `0.0.0.0` / `::`); the endpoint
//! pod's IP and target port; the SNI the client sends. An endpoint without a sockmesh proxy does
//! not enforce: ALLOW, no policy.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use super::authz::{AuthzAction, AuthzRequest};
use super::decision::{ClientBasis, Decider, Destination, Endpoint, Outbound};
use super::model::{PodKey, TlsMode};
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
    /// False when TLS does not agree or authorization denies.
    pub connects: bool,
    pub reason: Option<String>,
    pub authorization: AuthorizationReport,
}

/// The authorization decision of the endpoint's proxy.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorizationReport {
    pub action: AuthzAction,
    /// `NAMESPACE/NAME` of the deciding policy (the matching DENY or ALLOW).
    pub policy: Option<String>,
    /// The one-line reason with the matched rule, for the human output.
    #[serde(skip)]
    pub reason: String,
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

/// Who connects, as the endpoint's proxy sees it.
struct Caller {
    /// SPIFFE id of the client pod when it is in the mesh.
    identity: Option<String>,
    /// Client pod IPs, or the `--source-ip`.
    ips: Vec<IpAddr>,
}

impl Caller {
    fn new(snap: &Snapshot, from: Option<&PodKey>, source_ip: Option<IpAddr>) -> Self {
        let pod = from.and_then(|k| snap.pod(k).map(|p| (k, p)));
        let identity = pod
            .filter(|(k, _)| snap.in_mesh(k))
            .map(|(_, p)| p.spiffe_id(&snap.settings.trust_domain));
        let ips = match source_ip {
            Some(ip) => vec![ip],
            None => pod.map(|(_, p)| p.ips()).unwrap_or_default(),
        };
        Self { identity, ips }
    }

    /// The source address of a connection to `dst`: same family first.
    fn source_ip(&self, dst: IpAddr) -> IpAddr {
        let unspecified = match dst {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let same = self.ips.iter().find(|ip| ip.is_ipv4() == dst.is_ipv4());
        same.or(self.ips.first()).copied().unwrap_or(unspecified)
    }

    fn authorization(&self, snap: &Snapshot, e: &Endpoint) -> AuthorizationReport {
        let (Some(pod), true) = (&e.pod, e.in_mesh) else {
            return AuthorizationReport {
                action: AuthzAction::Allow,
                policy: None,
                reason: "no sockmesh proxy: not enforced".into(),
            };
        };
        let destination_ip = e.addr.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let mtls = e.client.mode == TlsMode::IstioMutual;
        let d = snap.authorize(
            pod,
            &AuthzRequest {
                principal: self.identity.as_deref().filter(|_| mtls),
                source_ip: self.source_ip(destination_ip),
                destination_ip,
                destination_port: e.target_port,
                sni: e
                    .client
                    .sni
                    .as_deref()
                    .filter(|_| e.client.mode != TlsMode::Disable),
            },
        );
        AuthorizationReport {
            action: d.action,
            policy: d.policy,
            reason: d.reason,
        }
    }

    fn report(&self, snap: &Snapshot, e: &Endpoint) -> EndpointReport {
        let authorization = self.authorization(snap, e);
        let denied = authorization.action == AuthzAction::Deny;
        let reason = match &e.outcome.reason {
            None if denied => Some(authorization.reason.clone()),
            other => other.clone(),
        };
        EndpointReport {
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
            connects: e.outcome.connects && !denied,
            reason,
            authorization,
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

/// `source_ip` replaces the client pod's IP (and is the only source address of `external`).
pub fn explain(
    snap: &Snapshot,
    from: Option<&PodKey>,
    source_ip: Option<IpAddr>,
    to: &str,
    endpoint: Option<&PodKey>,
) -> Result<ExplainReport, ExplainError> {
    let (host, port) = split_target(to)?;
    let out: Outbound = snap.outbound_to_host(from, &host, port)?;
    let caller = Caller::new(snap, from, source_ip);
    let endpoints: Vec<EndpointReport> = out
        .endpoints
        .iter()
        .map(|e| caller.report(snap, e))
        .collect();
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
            "  {who}{}: client {}{}, server {}{}{}, authz {} => {}",
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
            e.authorization.reason,
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
        let r = explain(&snap, Some(&from), None, "httpbin.test2:8000", None).unwrap();
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
        let r = explain(&snap, None, None, "httpbin.test2:8000", None).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap()["client_tls"], "DISABLE");
        assert!(render(&r).contains("FAILS: plaintext to a STRICT server"));
    }

    fn authz(v: &serde_json::Value) -> (String, serde_json::Value) {
        let a = &v["authorization"];
        let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["action", "policy"]);
        (
            a["action"].as_str().unwrap().to_owned(),
            a["policy"].clone(),
        )
    }

    #[test]
    fn authorization_in_json_and_text() {
        let policies = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-sleep, namespace: test2}
spec:
  selector: {matchLabels: {app: httpbin}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/test1/sa/sleep]}}]
    to: [{operation: {ports: ["80"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-docs, namespace: test2}
spec:
  action: DENY
  rules: [{from: [{source: {ipBlocks: [192.0.2.0/24]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nothing, namespace: test3}
spec: {}
"#;
        let snap = snapshot(&format!("{SEEDS}{policies}"));
        let sleep: PodKey = "test1/sleep".parse().unwrap();
        let to = "httpbin.test2:8000";
        let r = explain(&snap, Some(&sleep), None, to, None).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        let allowed = ("ALLOW".to_owned(), serde_json::json!("test2/only-sleep"));
        assert_eq!(authz(&v), allowed);
        assert_eq!(authz(&v["endpoints"][0]), allowed);
        assert_eq!(
            (v["connects"].clone(), v["client_tls"].clone()),
            (true.into(), "ISTIO_MUTUAL".into())
        );
        assert!(
            render(&r).contains("allowed by ALLOW policy test2/only-sleep rule 0"),
            "{}",
            render(&r)
        );

        // The same pod from a documentation address: the DENY decides and the connection fails.
        let ip = Some("192.0.2.7".parse().unwrap());
        let v = serde_json::to_value(explain(&snap, Some(&sleep), ip, to, None).unwrap()).unwrap();
        assert_eq!(
            authz(&v),
            ("DENY".to_owned(), serde_json::json!("test2/no-docs"))
        );
        assert_eq!(v["connects"], false);
        assert_eq!(v["reason"], "denied by DENY policy test2/no-docs rule 0");

        // Plaintext from outside the mesh has no identity: ALLOW policies apply, none matches.
        let v = serde_json::to_value(explain(&snap, None, None, to, None).unwrap()).unwrap();
        assert_eq!(authz(&v), ("DENY".to_owned(), serde_json::Value::Null));
        assert_eq!(v["connects"], false);

        // test3 is not in the mesh: nothing enforces its allow-nothing policy.
        let v = serde_json::to_value(
            explain(&snap, Some(&sleep), None, "httpbin.test3:8000", None).unwrap(),
        )
        .unwrap();
        assert_eq!(authz(&v), ("ALLOW".to_owned(), serde_json::Value::Null));
        assert_eq!(v["connects"], true);
    }

    #[test]
    fn bad_input_is_an_error() {
        let snap = snapshot(SEEDS);
        let from: PodKey = "test1/sleep".parse().unwrap();
        for to in ["httpbin", "httpbin:x", ":80"] {
            assert!(explain(&snap, Some(&from), None, to, None).is_err(), "{to}");
        }
        let other: PodKey = "test3/sleep".parse().unwrap();
        assert!(explain(&snap, Some(&from), None, "httpbin.test2:8000", Some(&other)).is_err());
        assert_eq!(
            split_target("[fd00::1]:443").unwrap(),
            ("fd00::1".to_owned(), 443)
        );
    }
}
