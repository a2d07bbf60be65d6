//! The seed article's scenarios end to end: the two-node seed topology (`testbed::seed`) with an
//! agent per node, one test per policy step (the same steps `cargo xtask demo` walks through), and
//! what the steps imply on the wire and in the agents' telemetry.
use std::time::Duration;

use anyhow::{Context, Result};
use testbed::eventually;
use testbed::seed::{self, Seed, StepReport};

fn seed(name: &str) -> Result<Option<Seed>> {
    if !testbed::require_root() {
        return Ok(None);
    }
    testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"));
    let mut seed = Seed::build(name)?;
    seed.start_agents(&[])?;
    Ok(Some(seed))
}

/// Runs the step named `name` on a fresh seed topology and asserts every cell.
fn step(name: &str) -> Result<Option<(Seed, StepReport)>> {
    let Some(seed) = seed(name)? else {
        return Ok(None);
    };
    let step = seed::steps()
        .into_iter()
        .find(|s| s.name == name)
        .with_context(|| format!("no step {name}"))?;
    let report = seed.run_step(&step)?;
    println!("{}\n{report}", step.title);
    report.assert_passed();
    Ok(Some((seed, report)))
}

#[test]
fn defaults_auto_mtls_in_the_mesh_plaintext_to_and_from_test3() -> Result<()> {
    step("defaults").map(drop)
}

#[test]
fn strict_namespace_refuses_test3_and_counts_the_refusal() -> Result<()> {
    let Some((seed, _)) = step("strict-test1")? else {
        return Ok(());
    };
    let server = seed.agent("n2");
    eventually(Duration::from_secs(5), || {
        Ok(server.scrape()?.lines().any(|l| {
            l.starts_with("sockmesh_refused_connections")
                && l.contains("plaintext_rejected")
                && !l.ends_with(" 0")
        }))
    })
    .with_context(|| server.scrape().unwrap_or_default())
}

#[test]
fn mesh_wide_istio_mutual_fails_towards_test3_and_strict_refuses_it() -> Result<()> {
    step("mesh-wide").map(drop)
}

#[test]
fn destination_rule_disable_reaches_test3_in_plaintext() -> Result<()> {
    step("disable-test3").map(drop)
}

#[test]
fn legacy_policy_with_targets_makes_one_service_permissive() -> Result<()> {
    step("legacy-permissive").map(drop)
}

#[test]
fn workload_selector_permissive_inside_a_strict_namespace() -> Result<()> {
    step("workload-permissive").map(drop)
}

#[test]
fn productpage_istio_mutual_on_9080_only() -> Result<()> {
    step("productpage").map(drop)
}

#[test]
fn mesh_traffic_is_tls_records_without_payload_and_disable_is_plaintext() -> Result<()> {
    let Some(seed) = seed("mtls-wire")? else {
        return Ok(());
    };
    let steps = seed::steps();
    let disable = steps
        .iter()
        .find(|s| s.name == "disable-test3")
        .context("step")?;
    seed.apply(&disable.policy)?;
    let sleep = seed.pod("test1/sleep");
    let secret = "sockmesh-secret-payload-0123456789";
    for (host, encrypted) in [("httpbin.test2", true), ("httpbin.test3", false)] {
        let svc = seed::service(host);
        let server = seed.pod(&svc.pod_key());
        let capture = seed.bed().wire_capture()?;
        let reply = sleep.connect(
            seed.address("test1/sleep", &svc, seed::HTTPBIN_PORT),
            secret,
        )?;
        assert_eq!(reply.msg, secret);
        let wire = capture.finish()?;
        assert_eq!(wire.dropped(), 0, "capture fell behind");
        let flows: Vec<_> = wire
            .flows()
            .into_iter()
            .filter(|f| f.client.ip() == sleep.ipv4() && f.server.ip() == server.ipv4())
            .collect();
        assert_eq!(
            flows.len(),
            1,
            "one connection on the wire to {host}: {flows:?}"
        );
        if encrypted {
            assert!(flows[0].is_tls(), "{host}: not TLS records both ways");
            assert!(
                !wire.contains(secret.as_bytes()),
                "{host}: payload in clear"
            );
        } else {
            assert!(
                flows[0].contains(secret.as_bytes()),
                "{host}: DISABLE must be plaintext"
            );
            assert!(!flows[0].is_tls());
        }
    }
    Ok(())
}

#[test]
fn connections_from_one_pod_to_another_share_one_pooled_mtls_connection() -> Result<()> {
    let Some(seed) = seed("pooled-wire")? else {
        return Ok(());
    };
    let sleep = seed.pod("test1/sleep");
    let svc = seed::service("httpbin.test2");
    let server = seed.pod(&svc.pod_key());
    let capture = seed.bed().wire_capture()?;
    let secrets: Vec<String> = (0..5)
        .map(|i| format!("pooled-secret-{i}-0123456789"))
        .collect();
    for secret in &secrets {
        let reply = sleep.connect(
            seed.address("test1/sleep", &svc, seed::HTTPBIN_PORT),
            secret,
        )?;
        assert_eq!(&reply.msg, secret);
    }
    let wire = capture.finish()?;
    assert_eq!(wire.dropped(), 0, "capture fell behind");
    let flows: Vec<_> = wire
        .flows()
        .into_iter()
        .filter(|f| f.client.ip() == sleep.ipv4() && f.server.ip() == server.ipv4())
        .collect();
    assert_eq!(
        flows.len(),
        1,
        "five app connections, one mTLS connection on the wire: {flows:?}"
    );
    assert!(flows[0].is_tls(), "not TLS records both ways");
    for secret in &secrets {
        assert!(!wire.contains(secret.as_bytes()), "payload in clear");
    }
    let server_agent = seed.agent("n2");
    eventually(Duration::from_secs(5), || {
        Ok(server_agent.scrape()?.lines().any(|l| {
            l.starts_with("istio_tcp_connections_opened_total")
                && l.contains("connection_security_policy=\"mutual_tls\"")
                && l.ends_with(" 5")
        }))
    })
    .with_context(|| server_agent.scrape().unwrap_or_default())
}
