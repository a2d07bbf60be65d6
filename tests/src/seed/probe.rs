//! One connection of a cell, observed three ways: the echo (did it work), the inter-node wire
//! (what the client side sent), and the agents' access logs (why it was refused).

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Seed, Service};
use crate::{ConnectError, FailKind, Wire, is_tls_records};

/// How long the agents may take to write the access-log line of a refused connection.
const LOG_WAIT: Duration = Duration::from_secs(2);

/// What the client side of a connection put on the inter-node wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnWire {
    /// TLS records only, the message never in clear.
    Mtls,
    /// The message in clear.
    Plain,
    /// No payload crossed the wire.
    Nothing,
}

impl fmt::Display for OnWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mtls => "mTLS",
            Self::Plain => "plain",
            Self::Nothing => "-",
        })
    }
}

/// Whether the echo came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The client's failure and the first access-log `reason` either agent wrote for it.
    Refused {
        kind: FailKind,
        reason: Option<String>,
    },
}

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub wire: OnWire,
    pub outcome: Outcome,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Ok => write!(f, "{} ok", self.wire),
            Outcome::Refused { kind, reason } => match reason {
                Some(reason) => write!(f, "{} refused ({reason})", self.wire),
                None => write!(f, "{} refused ({kind:?}, no reason logged)", self.wire),
            },
        }
    }
}

/// Classifies the flows between `client` and `server` by the message they carried.
pub fn on_wire(wire: &Wire, client: IpAddr, server: IpAddr, msg: &str) -> OnWire {
    let flows: Vec<_> = wire
        .flows()
        .into_iter()
        .filter(|f| {
            (f.client.ip(), f.server.ip()) == (client, server)
                || (f.client.ip(), f.server.ip()) == (server, client)
        })
        .collect();
    if flows.iter().any(|f| f.contains(msg.as_bytes())) {
        OnWire::Plain
    } else if flows
        .iter()
        .any(|f| !f.to_server.is_empty() && is_tls_records(&f.to_server))
    {
        OnWire::Mtls
    } else {
        OnWire::Nothing
    }
}

impl Seed {
    /// Connects `client` to `svc:port` once with a unique message while capturing the wire.
    pub fn probe(&self, client: &str, svc: &Service, port: u16) -> Result<Observed> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let msg = format!(
            "probe-{}-{client}-{}",
            SEQ.fetch_add(1, Ordering::Relaxed),
            svc.host()
        );
        let pod = self.pod(client);
        let server = self.pod(&svc.pod_key());
        let logged: Vec<usize> = self.agents().map(log_len).collect();
        let capture = self.bed().wire_capture()?;
        let reply = pod.connect(self.address(client, svc, port), &msg);
        let wire = capture.finish()?;
        let on_wire = on_wire(&wire, pod.ipv4().into(), server.ipv4().into(), &msg);
        let outcome = match reply {
            Ok(reply) if reply.msg == msg => Outcome::Ok,
            Ok(reply) => anyhow::bail!("echo of {msg:?} came back as {reply:?}"),
            Err(e) => {
                let kind = e.downcast::<ConnectError>()?.kind;
                Outcome::Refused {
                    kind,
                    reason: self.refusal_reason(&logged),
                }
            }
        };
        Ok(Observed {
            wire: on_wire,
            outcome,
        })
    }

    /// The first `reason` in the access-log lines written after the `before` line counts.
    fn refusal_reason(&self, before: &[usize]) -> Option<String> {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            for (agent, from) in self.agents().zip(before) {
                let reason = agent
                    .access_log()
                    .unwrap_or_default()
                    .into_iter()
                    .skip(*from)
                    .find_map(|entry| entry["reason"].as_str().map(str::to_owned));
                if reason.is_some() {
                    return reason;
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn log_len(agent: &crate::Agent) -> usize {
    agent.access_log().map_or(0, |l| l.len())
}
