//! End-to-end tests of what an operator sees: Istio TCP metrics after known traffic, the admin
//! endpoints, the access log, and the `sockmesh` CLI over the admin API.
use std::{process::Command, time::Duration};

use anyhow::{Context, Result};
use serde_json::Value;
use testbed::{Agent, PodOptions, TestBed, eventually};

const CAPTURE: (&str, &str) = ("sockmesh.io/capture", "enabled");

#[test]
fn metrics_admin_and_access_log_describe_mesh_traffic() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let bed = TestBed::new("observe")?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    bed.label_namespace("test1", CAPTURE.0, CAPTURE.1);
    bed.label_namespace("test2", CAPTURE.0, CAPTURE.1);
    let sleep = n1.pod_with("test1", "sleep", PodOptions::new().service_account("sleep"))?;
    let httpbin = n2.pod_with(
        "test2",
        "httpbin",
        PodOptions::new().service_account("httpbin"),
    )?;
    let _srv = httpbin.serve_echo(8000)?;
    let config = bed.write_config()?;
    let client_agent = Agent::start(&n1, &config)?;
    let server_agent = Agent::start(&n2, &config)?;

    for i in 0..3 {
        let reply = sleep
            .connect(httpbin.v4(8000), &format!("hello {i}"))
            .with_context(|| {
                format!(
                    "client agent:\n{}\nserver agent:\n{}",
                    client_agent.log(),
                    server_agent.log()
                )
            })?;
        assert_eq!(reply.msg, format!("hello {i}"));
    }

    let client_principal = "spiffe://cluster.local/ns/test1/sa/sleep";
    let server_principal = "spiffe://cluster.local/ns/test2/sa/httpbin";
    eventually(Duration::from_secs(5), || {
        let scrape = server_agent.scrape()?;
        Ok(scrape.lines().any(|l| {
            l.starts_with("istio_tcp_connections_closed_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains(&format!("source_principal=\"{client_principal}\""))
                && l.contains(&format!("destination_principal=\"{server_principal}\""))
                && l.contains("connection_security_policy=\"mutual_tls\"")
                && l.ends_with(" 3")
        }))
    })
    .with_context(|| {
        format!(
            "server scrape:\n{}",
            server_agent.scrape().unwrap_or_default()
        )
    })?;
    let scrape = client_agent.scrape()?;
    let opened = scrape
        .lines()
        .find(|l| {
            l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("reporter=\"source\"")
        })
        .context("client opened counter")?;
    assert!(
        opened.contains("connection_security_policy=\"mutual_tls\""),
        "{opened}"
    );
    assert!(
        opened.contains("source_workload_namespace=\"test1\""),
        "{opened}"
    );
    assert!(opened.ends_with(" 3"), "{opened}");
    assert!(scrape.contains("sockmesh_enrolled_workloads 1"), "{scrape}");

    // Access log on the server side: mode on the wire and the client's SPIFFE identity.
    eventually(Duration::from_secs(5), || {
        Ok(server_agent.access_log()?.len() >= 3)
    })?;
    let line = &server_agent.access_log()?[0];
    let text = line.to_string();
    assert!(text.contains(client_principal), "{text}");
    assert!(text.contains("mutual_tls"), "{text}");

    // Admin endpoints.
    let workloads: Value = serde_json::from_str(&client_agent.admin_get("/workloads")?)?;
    let w = &workloads.as_array().context("workloads array")?[0];
    assert_eq!(w["name"], "sleep");
    assert_eq!(w["identity"], client_principal);
    let certs: Value = serde_json::from_str(&server_agent.admin_get("/certs")?)?;
    assert!(certs.to_string().contains(server_principal), "{certs}");
    let dump: Value = serde_json::from_str(&server_agent.admin_get("/config_dump")?)?;
    assert_eq!(dump["settings"]["trust_domain"], "cluster.local");

    // The CLI reads the same admin API.
    let out = Command::new(testbed::sockmesh_bin()?)
        .args(["status", "--admin", &client_agent.admin_addr().to_string()])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("test1") && stdout.contains("sleep"),
        "{stdout}"
    );
    let ready = ureq::get(&format!(
        "http://{}/healthz/ready",
        client_agent.readiness_addr()
    ))
    .call()?;
    assert_eq!(ready.status(), 200);
    Ok(())
}

#[test]
fn strict_refusal_is_counted_with_its_reason() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let bed = TestBed::new("observe-strict")?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    bed.label_namespace("test1", CAPTURE.0, CAPTURE.1);
    let outsider = n1.pod("test3", "sleep")?;
    let httpbin = n2.pod("test1", "httpbin")?;
    let _srv = httpbin.serve_echo(8000)?;
    let config = bed.write_config()?;
    std::fs::write(
        config.join("strict.yaml"),
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: test1\nspec:\n  mtls:\n    mode: STRICT\n",
    )?;
    let agent = Agent::start(&n2, &config)?;
    let kind = outsider.connect_fails(httpbin.v4(8000), "plaintext")?;
    assert!(
        matches!(kind, testbed::FailKind::Reset | testbed::FailKind::Closed),
        "{kind:?}"
    );
    eventually(Duration::from_secs(5), || {
        Ok(agent.scrape()?.lines().any(|l| {
            l.starts_with("sockmesh_refused_connections_total{") && l.contains("plaintext_rejected")
        }))
    })
    .with_context(|| agent.scrape().unwrap_or_default())?;
    let log = agent.access_log()?;
    assert!(
        log.iter().any(|l| l.to_string().contains("STRICT")),
        "{log:?}"
    );
    Ok(())
}

#[test]
fn bytes_of_a_long_lived_connection_reach_the_metrics_before_it_closes() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let bed = TestBed::new("observe-long")?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    bed.label_namespace("test1", CAPTURE.0, CAPTURE.1);
    let sleep = n1.pod("test1", "sleep")?;
    let httpbin = n2.pod("test1", "httpbin")?;
    let _srv = httpbin.serve_echo(8000)?;
    let config = bed.write_config()?;
    let client_agent = Agent::start(&n1, &config)?;
    let _server_agent = Agent::start(&n2, &config)?;

    let mut hold = Command::new(testbed::pod_tool()?);
    hold.args(["hold", &httpbin.v4(8000).to_string(), "20"]);
    let _open = sleep.spawn(hold)?;
    let sent_bytes = || -> Result<u64> {
        Ok(client_agent
            .scrape()?
            .lines()
            .filter(|l| {
                l.starts_with("istio_tcp_received_bytes_total{")
                    && l.contains("reporter=\"source\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum())
    };
    // The connection stays open for 20 s; its bytes must show up within the flush period.
    eventually(Duration::from_secs(12), || Ok(sent_bytes()? > 0))?;
    let connections: Value = serde_json::from_str(&client_agent.admin_get("/connections")?)?;
    assert_eq!(
        connections.as_array().map(Vec::len),
        Some(1),
        "{connections}"
    );
    Ok(())
}
