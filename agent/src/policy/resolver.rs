//! Per-connection decisions on a [`Snapshot`]: `inbound` for the server side, `outbound` for the
//! client side. Both only do hash lookups and walk the destination's own endpoints.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::auto_mtls::{Credential, EndpointFacts, client_tls};
use super::decision::{ClientBasis, ClientTls, Decider, Destination, Endpoint, Inbound, Outbound};
use super::destination_rule::{RuleTls, rule_tls};
use super::legacy;
use super::model::{InboundMode, Location, Pod, PodKey};
use super::outcome::outcome;
use super::snapshot::Snapshot;

/// The client side of a connection.
struct Client<'a> {
    namespace: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
    in_mesh: bool,
}

/// A classified destination, before endpoints are expanded.
enum Target {
    Service {
        svc: usize,
        port: u16,
    },
    Pod {
        pod: usize,
        port: u16,
    },
    Entry {
        entry: usize,
        host: String,
        port: u16,
        addr: Option<SocketAddr>,
    },
    External {
        host: String,
        port: u16,
        addr: Option<SocketAddr>,
    },
}

/// Bad input to [`Snapshot::outbound_to_host`].
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("unknown pod {0}")]
    UnknownPod(PodKey),
    #[error("service {0} has no port {1}")]
    NoSuchPort(String, u16),
    #[error("short host name {0:?} needs a client namespace; use NAME.NAMESPACE")]
    ShortNameWithoutNamespace(String),
}

impl Snapshot {
    /// The inbound mode of `pod` on `target_port`, or `None` for an unknown pod. A pod outside the
    /// mesh has no proxy: DISABLE.
    pub fn inbound(&self, pod: &PodKey, target_port: u16) -> Option<Inbound> {
        self.pod_by_key
            .get(pod)
            .map(|i| self.inbound_idx(*i, target_port))
    }

    fn inbound_idx(&self, i: usize, port: u16) -> Inbound {
        if !self.pod_in_mesh[i] {
            return Inbound {
                mode: InboundMode::Disable,
                decided_by: None,
            };
        }
        let peer = self.pod_peer[i].for_port(port);
        let old = legacy::for_port(&self.pod_legacy[i], port);
        match (old, &peer.source) {
            (Some(l), source) if source.as_ref().is_none_or(|(lvl, _)| l.level > *lvl) => Inbound {
                mode: l.mode,
                decided_by: Some(Decider {
                    resource: l.resource.clone(),
                    port: None,
                }),
            },
            (_, Some((_, res))) => Inbound {
                mode: peer.mode,
                decided_by: Some(Decider {
                    resource: res.clone(),
                    port: peer.port,
                }),
            },
            (_, None) => Inbound {
                mode: peer.mode,
                decided_by: None,
            },
        }
    }

    /// The outbound decision for a connection from `source` (`None`: not a known pod, e.g. a
    /// host process) to `dst`.
    pub fn outbound(&self, source: Option<&PodKey>, dst: SocketAddr) -> Outbound {
        self.expand(&self.client(source), self.classify(dst))
    }

    /// As [`outbound`](Self::outbound) but by name, for `explain`: `HOST` may be a service short name
    /// (client's namespace), `name.ns`, `name.ns.svc`, an FQDN, an IP, an entry host or an external name.
    pub fn outbound_to_host(
        &self,
        source: Option<&PodKey>,
        host: &str,
        port: u16,
    ) -> Result<Outbound, QueryError> {
        if let Some(key) = source
            && !self.pod_by_key.contains_key(key)
        {
            return Err(QueryError::UnknownPod(key.clone()));
        }
        let client = self.client(source);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(self.expand(&client, self.classify(SocketAddr::new(ip, port))));
        }
        let domain = &self.settings.cluster_domain;
        let dots = host.matches('.').count();
        let candidates: Vec<String> = match dots {
            0 if source.is_none() => {
                return Err(QueryError::ShortNameWithoutNamespace(host.into()));
            }
            0 => vec![format!("{host}.{}.svc.{domain}", client.namespace)],
            1 => vec![format!("{host}.svc.{domain}"), host.to_owned()],
            2 if host.ends_with(".svc") => vec![format!("{host}.{domain}")],
            _ => vec![host.to_owned()],
        };
        for name in &candidates {
            if let Some(s) = self.svc_by_host.get(name) {
                let svc = &self.resources.services[*s];
                if svc.port(port).is_none() {
                    return Err(QueryError::NoSuchPort(name.clone(), port));
                }
                return Ok(self.expand(&client, Target::Service { svc: *s, port }));
            }
        }
        let target = match self.se_by_host.get(host) {
            Some(e)
                if self.resources.service_entries[*e]
                    .spec
                    .ports
                    .iter()
                    .any(|p| p.number == port) =>
            {
                Target::Entry {
                    entry: *e,
                    host: host.to_owned(),
                    port,
                    addr: None,
                }
            }
            _ => Target::External {
                host: host.to_owned(),
                port,
                addr: None,
            },
        };
        Ok(self.expand(&client, target))
    }

    fn client<'a>(&'a self, source: Option<&PodKey>) -> Client<'a> {
        match source.and_then(|k| self.pod_by_key.get(k)) {
            Some(i) => {
                let pod = &self.resources.pods[*i];
                Client {
                    namespace: pod.namespace(),
                    labels: Some(pod.labels()),
                    in_mesh: self.pod_in_mesh[*i],
                }
            }
            None => Client {
                namespace: "",
                labels: None,
                in_mesh: false,
            },
        }
    }

    fn classify(&self, dst: SocketAddr) -> Target {
        let (ip, port) = (dst.ip(), dst.port());
        if let Some(s) = self.svc_by_ip.get(&ip)
            && self.resources.services[*s].port(port).is_some()
        {
            return Target::Service { svc: *s, port };
        }
        if let Some(p) = self.pod_by_ip.get(&ip) {
            return Target::Pod { pod: *p, port };
        }
        let has_port = |e: &usize| {
            self.resources.service_entries[*e]
                .spec
                .ports
                .iter()
                .any(|p| p.number == port)
        };
        let entry = self
            .se_by_ip
            .get(&ip)
            .and_then(|v| v.iter().copied().find(has_port))
            .or_else(|| {
                self.se_cidrs
                    .iter()
                    .filter(|(net, _)| net.contains(&ip))
                    .map(|(_, e)| *e)
                    .find(has_port)
            });
        match entry {
            Some(e) => {
                let host = self.resources.service_entries[e]
                    .spec
                    .hosts
                    .first()
                    .cloned()
                    .unwrap_or_else(|| ip.to_string());
                Target::Entry {
                    entry: e,
                    host,
                    port,
                    addr: Some(dst),
                }
            }
            None => Target::External {
                host: ip.to_string(),
                port,
                addr: Some(dst),
            },
        }
    }

    fn expand(&self, client: &Client<'_>, target: Target) -> Outbound {
        match target {
            Target::Service { svc, port } => self.service_outbound(client, svc, port),
            Target::Pod { pod, port } => self.pod_outbound(client, pod, port),
            Target::Entry {
                entry,
                host,
                port,
                addr,
            } => self.entry_outbound(client, entry, &host, port, addr),
            Target::External { host, port, addr } => {
                let rule = self.dest(client, &host, port, None, false);
                let endpoint = self.external_endpoint(client, &rule, true, addr);
                Outbound {
                    destination: Destination::External { host, port },
                    app_tls: false,
                    endpoints: vec![endpoint],
                }
            }
        }
    }

    /// A Service port: every endpoint pod that has the target port.
    fn service_outbound(&self, client: &Client<'_>, svc_index: usize, port: u16) -> Outbound {
        let resources = &self.resources;
        let svc = &resources.services[svc_index];
        let svc_port = svc.port(port).cloned().unwrap_or_default();
        let fqdn = self.service_fqdn(svc);
        let rule = self.dest(
            client,
            &fqdn,
            port,
            Some(svc.namespace()),
            svc_port.app_tls(),
        );
        let endpoints = self.svc_endpoints[svc_index]
            .iter()
            .filter_map(|&pod| {
                let target_port = svc_port.target_port_on(&resources.pods[pod])?;
                Some(self.pod_endpoint(client, &rule, pod, target_port))
            })
            .collect();
        Outbound {
            destination: Destination::Service {
                namespace: svc.namespace().to_owned(),
                name: svc.name().to_owned(),
                fqdn: fqdn.clone(),
                port,
                port_name: svc_port.name.clone(),
            },
            app_tls: rule.app_tls,
            endpoints,
        }
    }

    /// A pod reached by its address. It is still a service endpoint when one of its services
    /// targets this port; that service's host then selects the DestinationRule.
    fn pod_outbound(&self, client: &Client<'_>, pod_index: usize, port: u16) -> Outbound {
        let resources = &self.resources;
        let pod = &resources.pods[pod_index];
        let via_service = self.pod_services[pod_index].iter().find_map(|&s| {
            let svc = &resources.services[s];
            let svc_port = svc
                .spec
                .ports
                .iter()
                .find(|sp| sp.target_port_on(pod) == Some(port))?;
            Some((
                self.service_fqdn(svc),
                svc_port.port,
                svc_port.app_tls(),
                svc.namespace(),
            ))
        });
        let ip = pod.ips().first().map(IpAddr::to_string).unwrap_or_default();
        let (host, host_port, app_tls, namespace) =
            via_service.unwrap_or((ip, port, false, pod.namespace()));
        let rule = self.dest(client, &host, host_port, Some(namespace), app_tls);
        let endpoint = self.pod_endpoint(client, &rule, pod_index, port);
        Outbound {
            destination: Destination::Pod {
                pod: PodKey::new(pod.namespace(), pod.name()),
                port,
            },
            app_tls,
            endpoints: vec![endpoint],
        }
    }

    /// A ServiceEntry host and port.
    fn entry_outbound(
        &self,
        client: &Client<'_>,
        entry_index: usize,
        host: &str,
        port: u16,
        addr: Option<SocketAddr>,
    ) -> Outbound {
        let entry = &self.resources.service_entries[entry_index];
        let entry_port = entry
            .spec
            .ports
            .iter()
            .find(|p| p.number == port)
            .cloned()
            .unwrap_or_default();
        let namespace = entry.metadata.namespace();
        let rule = self.dest(client, host, port, Some(namespace), entry_port.app_tls());
        let mesh_external = entry.spec.location == Location::MeshExternal;
        let endpoint = self.external_endpoint(client, &rule, mesh_external, addr);
        Outbound {
            destination: Destination::ServiceEntry {
                namespace: namespace.to_owned(),
                name: entry.metadata.name.clone(),
                host: host.to_owned(),
                port,
                location: entry.spec.location,
            },
            app_tls: rule.app_tls,
            endpoints: vec![endpoint],
        }
    }

    /// Looks up the DestinationRule once per destination: it depends on client, host and port only.
    fn dest<'a>(
        &'a self,
        client: &Client<'_>,
        host: &'a str,
        port: u16,
        service_ns: Option<&str>,
        app_tls: bool,
    ) -> Dest<'a> {
        let mut d = Dest {
            host,
            port,
            app_tls,
            rule: None,
            credential: None,
        };
        let Some(labels) = client.labels.filter(|_| client.in_mesh) else {
            return d;
        };
        d.rule = self
            .dest_rules
            .lookup(
                client.namespace,
                labels,
                host,
                service_ns,
                &self.settings.root_namespace,
            )
            .and_then(|m| rule_tls(&self.resources.destination_rules, m, port));
        d.credential = d
            .rule
            .and_then(|r| r.tls.credential_name.as_deref())
            .and_then(|name| self.credential(client.namespace, name));
        d
    }

    fn pod_endpoint(
        &self,
        client: &Client<'_>,
        d: &Dest<'_>,
        p: usize,
        target_port: u16,
    ) -> Endpoint {
        let pod: &Pod = &self.resources.pods[p];
        let in_mesh = self.pod_in_mesh[p];
        let identity = pod.spiffe_id(&self.settings.trust_domain);
        let server = self.inbound_idx(p, target_port);
        let facts = EndpointFacts {
            in_mesh,
            mode: server.mode,
            identity: Some(&identity),
            mesh_external: false,
            host: d.host,
            port: d.port,
        };
        let client_tls = self.client_tls(client, d, &facts);
        let outcome = outcome(
            &client_tls,
            in_mesh,
            server.mode,
            Some(&identity),
            d.app_tls,
        );
        Endpoint {
            addr: pod
                .ips()
                .first()
                .map(|ip| SocketAddr::new(*ip, target_port)),
            pod: Some(PodKey::new(pod.namespace(), pod.name())),
            target_port,
            in_mesh,
            identity: Some(identity),
            server,
            client: client_tls,
            outcome,
        }
    }

    fn external_endpoint(
        &self,
        client: &Client<'_>,
        d: &Dest<'_>,
        mesh_external: bool,
        addr: Option<SocketAddr>,
    ) -> Endpoint {
        let server = Inbound {
            mode: InboundMode::Disable,
            decided_by: None,
        };
        let facts = EndpointFacts {
            in_mesh: false,
            mode: server.mode,
            identity: None,
            mesh_external,
            host: d.host,
            port: d.port,
        };
        let client_tls = self.client_tls(client, d, &facts);
        let outcome = outcome(&client_tls, false, server.mode, None, d.app_tls);
        Endpoint {
            addr,
            pod: None,
            target_port: addr.map_or(d.port, |a| a.port()),
            in_mesh: false,
            identity: None,
            server,
            client: client_tls,
            outcome,
        }
    }

    fn client_tls(
        &self,
        client: &Client<'_>,
        d: &Dest<'_>,
        facts: &EndpointFacts<'_>,
    ) -> ClientTls {
        if !client.in_mesh {
            return ClientTls::plaintext(ClientBasis::ClientOutsideMesh);
        }
        client_tls(
            d.rule,
            self.settings.auto_mtls,
            facts,
            d.credential.as_ref(),
        )
    }
}

/// Per-destination facts shared by all its endpoints.
struct Dest<'a> {
    host: &'a str,
    /// Service or entry port (port-level settings and SNI use it).
    port: u16,
    app_tls: bool,
    rule: Option<RuleTls<'a>>,
    credential: Option<Credential>,
}

#[cfg(test)]
pub(crate) mod tests;
