//! Workload identities end to end on the seed topology: the server side learns the client's
//! SPIFFE id, pods with different service accounts hold different certificates, the client
//! checks the server's identity, certificates rotate under live traffic, and policy changes
//! reach new connections within a second while open ones keep their mode.
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use testbed::seed::{self, OnWire, Outcome, POLICY_FILE, STRICT_TEST1, Seed, spiffe_id};
use testbed::{Pod, Process, eventually};

fn seed(name: &str, agent_flags: &[&str]) -> Result<Option<Seed>> {
    if !testbed::require_root() {
        return Ok(None);
    }
    testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"));
    let mut seed = Seed::build(name)?;
    seed.start_agents(agent_flags)?;
    Ok(Some(seed))
}

/// `pod-tool hold`: one connection from `pod` to `addr`, an exchange every 200 ms for `secs`.
/// Returns once the connection is open.
fn hold(pod: &Pod, addr: SocketAddr, secs: u32) -> Result<Process> {
    let mut cmd = Command::new(testbed::pod_tool()?);
    cmd.args(["hold", &addr.to_string(), &secs.to_string()]);
    let mut process = pod.spawn(cmd)?;
    process.wait_for_log("connected", Duration::from_secs(5))?;
    Ok(process)
}

/// Waits for a `hold` to end and returns how many exchanges succeeded; an error if one failed.
fn held(mut process: Process, secs: u32) -> Result<u64> {
    let limit = Duration::from_secs(u64::from(secs) + 10);
    let status = process
        .wait_timeout(limit)?
        .with_context(|| format!("hold still running after {limit:?}"))?;
    let log = process.log();
    let report: Value = serde_json::from_str(log.lines().last().unwrap_or_default())
        .with_context(|| format!("hold output: {log}"))?;
    ensure!(status.success(), "held connection broke: {report}");
    report["ok"].as_u64().context("exchange count")
}

/// `/certs` of an agent: serial by SPIFFE id.
fn serials(seed: &Seed, node: &str) -> Result<Vec<(String, String)>> {
    let certs: Value = serde_json::from_str(&seed.agent(node).admin_get("/certs")?)?;
    certs
        .as_array()
        .context("/certs is an array")?
        .iter()
        .map(|c| {
            Ok((
                c["identity"].as_str().context("identity")?.to_owned(),
                c["serial"].as_str().context("serial")?.to_owned(),
            ))
        })
        .collect()
}

fn serial_of(serials: &[(String, String)], id: &str) -> Result<String> {
    serials
        .iter()
        .find(|(i, _)| i == id)
        .map(|(_, s)| s.clone())
        .with_context(|| format!("no certificate for {id} in {serials:?}"))
}

/// Writes the policy file without waiting for the agents (to time the reload).
fn write_policy(seed: &Seed, yaml: &str) -> Result<()> {
    let path = seed.config_dir().join(POLICY_FILE);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

#[test]
fn server_side_sees_the_client_spiffe_id() -> Result<()> {
    let Some(seed) = seed("id-principal", &[])? else {
        return Ok(());
    };
    let httpbin2 = seed::service("httpbin.test2");
    for client in ["test1/sleep", "test2/sleep"] {
        let observed = seed.probe(client, &httpbin2, seed::HTTPBIN_PORT)?;
        assert_eq!(observed.outcome, Outcome::Ok, "{client}");
        let (ns, sa) = client.split_once('/').expect("namespace/name");
        let principal = spiffe_id(ns, sa);
        let server = seed.agent("n2");
        eventually(Duration::from_secs(5), || {
            Ok(server.access_log()?.iter().any(|e| {
                e["direction"] == "inbound"
                    && e["src.principal"] == principal.as_str()
                    && e["dst.principal"] == spiffe_id("test2", "httpbin").as_str()
                    && e["mode"] == "mutual_tls"
            }))
        })
        .with_context(|| format!("server access log: {:#?}", server.access_log()))?;
    }
    // The client side names the identity it verified.
    let client = seed.agent("n1");
    eventually(Duration::from_secs(5), || {
        Ok(client.access_log()?.iter().any(|e| {
            e["direction"] == "outbound"
                && e["src.principal"] == spiffe_id("test1", "sleep").as_str()
                && e["dst.principal"] == spiffe_id("test2", "httpbin").as_str()
        }))
    })
    .with_context(|| format!("client access log: {:#?}", client.access_log()))?;
    // A plaintext client from outside the mesh has no identity.
    let observed = seed.probe("test3/sleep", &httpbin2, seed::HTTPBIN_PORT)?;
    assert_eq!(observed.outcome, Outcome::Ok);
    let server = seed.agent("n2");
    eventually(Duration::from_secs(5), || {
        Ok(server
            .access_log()?
            .iter()
            .any(|e| e["mode"] == "plaintext" && e["src.principal"].is_null()))
    })
}

#[test]
fn pods_with_different_service_accounts_on_one_node_hold_different_certificates() -> Result<()> {
    let Some(seed) = seed("id-certs", &[])? else {
        return Ok(());
    };
    let n2 = serials(&seed, "n2")?;
    let ids = [
        spiffe_id("test1", "httpbin"),
        spiffe_id("test2", "httpbin"),
        spiffe_id("bookinfo", "bookinfo-productpage"),
    ];
    let mut distinct: Vec<String> = ids
        .iter()
        .map(|id| serial_of(&n2, id))
        .collect::<Result<_>>()?;
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "one certificate per identity: {n2:?}");
    // test3 is outside the mesh: no certificate for it.
    assert!(
        !n2.iter().any(|(id, _)| id.contains("/ns/test3/")),
        "{n2:?}"
    );
    let n1 = serials(&seed, "n1")?;
    assert_ne!(
        serial_of(&n1, &spiffe_id("test1", "sleep"))?,
        serial_of(&n1, &spiffe_id("test2", "sleep"))?
    );
    Ok(())
}

#[test]
fn client_refuses_a_server_with_an_unexpected_identity() -> Result<()> {
    let Some(seed) = seed("id-san", &[])? else {
        return Ok(());
    };
    let rule = |san: &str| {
        format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: httpbin2, namespace: test1}}\nspec:\n  host: httpbin.test2.svc.cluster.local\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n      subjectAltNames: [\"{san}\"]\n"
        )
    };
    let httpbin2 = seed::service("httpbin.test2");
    seed.apply(&rule(&spiffe_id("test2", "not-httpbin")))?;
    let observed = seed.probe("test1/sleep", &httpbin2, seed::HTTPBIN_PORT)?;
    assert_eq!(observed.wire, OnWire::Mtls, "{observed}");
    assert!(
        matches!(&observed.outcome, Outcome::Refused { reason: Some(r), .. } if r == "upstream_handshake"),
        "{observed}"
    );
    seed.apply(&rule(&spiffe_id("test2", "httpbin")))?;
    let observed = seed.probe("test1/sleep", &httpbin2, seed::HTTPBIN_PORT)?;
    assert_eq!(
        (observed.wire, observed.outcome.clone()),
        (OnWire::Mtls, Outcome::Ok),
        "{observed}"
    );
    Ok(())
}

#[test]
fn short_lived_certificates_rotate_under_live_traffic() -> Result<()> {
    let Some(seed) = seed("id-rotate", &["--cert-ttl", "6s"])? else {
        return Ok(());
    };
    let (client_id, server_id) = (spiffe_id("test1", "sleep"), spiffe_id("test2", "httpbin"));
    let before = (
        serial_of(&serials(&seed, "n1")?, &client_id)?,
        serial_of(&serials(&seed, "n2")?, &server_id)?,
    );
    let httpbin2 = seed::service("httpbin.test2");
    let addr = seed.address("test1/sleep", &httpbin2, seed::HTTPBIN_PORT);
    let secs = 9;
    let open = hold(seed.pod("test1/sleep"), addr, secs)?;
    let exchanges = held(open, secs)?;
    assert!(exchanges > 20, "only {exchanges} exchanges");
    let after = (
        serial_of(&serials(&seed, "n1")?, &client_id)?,
        serial_of(&serials(&seed, "n2")?, &server_id)?,
    );
    assert_ne!(before.0, after.0, "client certificate renewed at half-life");
    assert_ne!(before.1, after.1, "server certificate renewed at half-life");
    let observed = seed.probe("test1/sleep", &httpbin2, seed::HTTPBIN_PORT)?;
    assert_eq!(
        (observed.wire, observed.outcome.clone()),
        (OnWire::Mtls, Outcome::Ok),
        "{observed}"
    );
    Ok(())
}

#[test]
fn policy_change_reaches_new_connections_within_a_second_open_ones_keep_their_mode() -> Result<()> {
    let Some(seed) = seed("id-reload", &[])? else {
        return Ok(());
    };
    let httpbin1 = seed::service("httpbin.test1");
    let client = seed.pod("test3/sleep");
    let addr = seed.address("test3/sleep", &httpbin1, seed::HTTPBIN_PORT);
    let secs = 4;
    let open = hold(client, addr, secs)?;

    write_policy(&seed, STRICT_TEST1)?;
    let written = Instant::now();
    loop {
        if client
            .connect_timeout(addr, "new", Duration::from_secs(2))
            .is_err()
        {
            break;
        }
        ensure!(
            written.elapsed() < Duration::from_millis(1500),
            "STRICT not applied to new connections after {:?}",
            written.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("STRICT refused new plaintext after {:?}", written.elapsed());
    let exchanges = held(open, secs)?;
    assert!(exchanges > 10, "only {exchanges} exchanges");
    Ok(())
}

/// Runs `openssl` with `args` in `dir`; fails with its stderr.
fn openssl(dir: &std::path::Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()?;
    ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA (`<name>-ca.pem`) and a leaf it signed (`<name>.pem`, `<name>-key.pem`) for `san`.
fn issue(dir: &std::path::Path, name: &str, san: &str) -> Result<()> {
    let (ca, ca_key) = (format!("{name}-ca.pem"), format!("{name}-ca-key.pem"));
    let (cert, key, csr) = (
        format!("{name}.pem"),
        format!("{name}-key.pem"),
        format!("{name}.csr"),
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-nodes",
            "-days",
            "1",
            "-newkey",
            "rsa:2048",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
            "-subj",
            &format!("/CN={name} CA"),
        ],
    )?;
    openssl(
        dir,
        &[
            "req",
            "-nodes",
            "-newkey",
            "rsa:2048",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={san}"),
        ],
    )?;
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, format!("subjectAltName=DNS:{san}\n"))?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &cert,
            "-extfile",
            &ext.display().to_string(),
        ],
    )
}

/// Sends one line through the mesh pod (plaintext; the proxy originates TLS) and returns the
/// reply line, which `openssl s_server -rev` reverses.
fn line_via(pod: &Pod, addr: SocketAddr, line: &str) -> Result<String> {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} && echo {line} >&3 && timeout 5 head -n1 <&3",
        addr.ip(),
        addr.port()
    );
    let out = pod.run_timeout(
        {
            let mut cmd = Command::new("bash");
            cmd.args(["-c", &script]);
            cmd
        },
        Duration::from_secs(10),
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn simple_and_mutual_origination_to_a_tls_server_outside_the_mesh() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"));
    let mut seed = Seed::build("id-originate")?;
    let host = "tlsserver.test3.svc.cluster.local";
    let dir = seed.bed().workdir().join("pki");
    std::fs::create_dir_all(&dir)?;
    issue(&dir, "server", host)?;
    issue(&dir, "client", "sleep.test1")?;
    issue(&dir, "foreign", host)?;
    let server = seed.node("n2").pod("test3", "tlsserver")?;
    let s_server = |verify: bool| -> Result<Process> {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(&dir).args([
            "s_server",
            "-accept",
            "8443",
            "-cert",
            "server.pem",
            "-key",
            "server-key.pem",
            "-rev",
        ]);
        if verify {
            cmd.args([
                "-Verify",
                "1",
                "-verify_return_error",
                "-CAfile",
                "client-ca.pem",
            ]);
        }
        let mut p = server.spawn(cmd)?;
        p.wait_for_log("ACCEPT", Duration::from_secs(5))?;
        Ok(p)
    };
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: tlsserver, namespace: test3}\nspec:\n  clusterIP: 172.20.3.2\n  selector: {app: tlsserver}\n  ports: [{name: tls, port: 8443, targetPort: 8443}]\n";
    let config = seed.bed().write_config()?;
    std::fs::write(config.join("tlsserver.yaml"), service)?;
    seed.start_agents(&[])?;
    let sleep = seed.pod("test1/sleep");
    let addr: SocketAddr = "172.20.3.2:8443".parse()?;
    let pki = dir.display().to_string();
    let rule = |tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {{name: tlsserver, namespace: test1}}\nspec:\n  host: {host}\n  trafficPolicy:\n    tls:\n      sni: {host}\n{tls}"
        )
    };

    let simple = s_server(false)?;
    seed.apply(&rule(&format!(
        "      mode: SIMPLE\n      caCertificates: {pki}/server-ca.pem\n"
    )))?;
    assert_eq!(
        line_via(sleep, addr, "simple")?,
        "elpmis",
        "SIMPLE with the server's CA"
    );
    seed.apply(&rule(&format!(
        "      mode: SIMPLE\n      caCertificates: {pki}/foreign-ca.pem\n"
    )))?;
    assert_eq!(
        line_via(sleep, addr, "foreign")?,
        "",
        "SIMPLE with a foreign CA must fail"
    );
    drop(simple);

    let _mutual = s_server(true)?;
    seed.apply(&rule(&format!(
        "      mode: MUTUAL\n      caCertificates: {pki}/server-ca.pem\n      clientCertificate: {pki}/client.pem\n      privateKey: {pki}/client-key.pem\n"
    )))?;
    assert_eq!(
        line_via(sleep, addr, "mutual")?,
        "lautum",
        "MUTUAL with a client certificate"
    );
    seed.apply(&rule(&format!(
        "      mode: MUTUAL\n      caCertificates: {pki}/server-ca.pem\n      clientCertificate: {pki}/foreign.pem\n      privateKey: {pki}/foreign-key.pem\n"
    )))?;
    assert_eq!(
        line_via(sleep, addr, "untrusted")?,
        "",
        "MUTUAL with a client certificate the server does not trust must fail"
    );
    Ok(())
}
