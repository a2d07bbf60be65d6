//! The reference pairs of the perf notes: one Debian HAProxy in each pod, placed where sockmesh's
//! proxies sit (the client pod's loopback, the server pod's address), as an mTLS pair with
//! certificates from the mesh CA or as a plain TCP relay pair.
use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};
use testbed::{Pod, Process};

use super::certs::PairCerts;
use super::workloads::Targets;

/// Shared by both sides: two threads as the agents' default runtime on two cores, TCP mode, no
/// logging, no splice (a userspace-copy relay, like sockmesh's forwarding).
const GLOBAL: &str = "global
    nbthread 2
    maxconn 9000
    ssl-server-verify required
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
";

/// Both HAProxy processes of one block; killed when dropped.
pub struct HaproxyPair {
    client: Process,
    server: Process,
    pub targets: Targets,
}

impl HaproxyPair {
    /// Starts the pair: `certs` given, an mTLS pair (TLS 1.3, client certificates verified both
    /// ways, ports 15001/15002 -> 15006/15007); none, the plain relay (15011/15012 -> 15016/15017).
    pub fn start(
        client: &Pod,
        server: &Pod,
        certs: Option<&PairCerts>,
        dir: &Path,
    ) -> Result<HaproxyPair> {
        let base: u16 = if certs.is_some() { 15000 } else { 15010 };
        let server_ip = server.ipv4();
        let (client_cfg, server_cfg) = configs(server_ip, base, certs);
        fs::create_dir_all(dir)?;
        let spawn = |pod: &Pod, name: &str, text: &str| -> Result<Process> {
            let path = dir.join(name);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            let mut cmd = Command::new("haproxy");
            // -db: stay in the foreground, so the spawned pid is the proxy itself.
            cmd.arg("-db").arg("-f").arg(&path);
            pod.spawn(cmd)
        };
        Ok(HaproxyPair {
            server: spawn(server, "server.cfg", &server_cfg)?,
            client: spawn(client, "client.cfg", &client_cfg)?,
            targets: Targets {
                http: SocketAddr::from((Ipv4Addr::LOCALHOST, base + 1)),
                iperf: SocketAddr::from((Ipv4Addr::LOCALHOST, base + 2)),
            },
        })
    }

    /// Client-side then server-side pid.
    pub fn pids(&self) -> [u32; 2] {
        [self.client.pid(), self.server.pid()]
    }

    /// Both logs, for an error message when the pair does not carry traffic.
    pub fn logs(&self) -> String {
        format!(
            "client haproxy:\n{}\nserver haproxy:\n{}",
            self.client.log(),
            self.server.log()
        )
    }
}

/// Client-side and server-side configuration texts.
fn configs(server_ip: Ipv4Addr, base: u16, certs: Option<&PairCerts>) -> (String, String) {
    let tls = |pem: &Path, ca: &Path| {
        format!(
            " ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3",
            pem.display(),
            ca.display()
        )
    };
    let (client_tls, server_tls) = match certs {
        Some(c) => (
            tls(&c.client_pem, &c.ca_file),
            tls(&c.server_pem, &c.ca_file),
        ),
        None => (String::new(), String::new()),
    };
    let mut client = GLOBAL.to_owned();
    let mut server = GLOBAL.to_owned();
    for (name, offset, app_port) in [("http", 1, 80), ("iperf", 2, 5201)] {
        let local = base + offset;
        let wire = base + offset + 5;
        let _ = write!(
            client,
            "frontend out_{name}\n    bind 127.0.0.1:{local}\n    default_backend up_{name}\n\
             backend up_{name}\n    server b {server_ip}:{wire}{client_tls}\n"
        );
        let _ = write!(
            server,
            "frontend in_{name}\n    bind {server_ip}:{wire}{server_tls}\n    default_backend app_{name}\n\
             backend app_{name}\n    server app 127.0.0.1:{app_port}\n"
        );
    }
    (client, server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn mtls_pair_verifies_both_ways() {
        let certs = PairCerts {
            client_pem: PathBuf::from("/c.pem"),
            server_pem: PathBuf::from("/s.pem"),
            ca_file: PathBuf::from("/root.pem"),
        };
        let (client, server) = configs(Ipv4Addr::new(10, 0, 2, 2), 15000, Some(&certs));
        assert!(client.contains("bind 127.0.0.1:15001"));
        assert!(client.contains(
            "server b 10.0.2.2:15006 ssl crt /c.pem ca-file /root.pem verify required ssl-min-ver TLSv1.3"
        ));
        assert!(
            server.contains("bind 10.0.2.2:15007 ssl crt /s.pem ca-file /root.pem verify required")
        );
        assert!(server.contains("server app 127.0.0.1:5201"));
    }

    #[test]
    fn plain_relay_has_no_tls() {
        let (client, server) = configs(Ipv4Addr::new(10, 0, 2, 2), 15010, None);
        assert!(client.contains("server b 10.0.2.2:15016\n"));
        assert!(server.contains("bind 10.0.2.2:15017\n"));
        assert!(!client.contains("ssl crt") && !server.contains("ssl crt"));
    }
}
