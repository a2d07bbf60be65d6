//! The DaemonSet in `deploy/base` against a running agent: every probe (and the Prometheus scrape)
//! the manifest declares answers 200 on the port the manifest names, mapped to where the test
//! agent serves the same server (each agent of the bed has its own loopback ports).
use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use testbed::{Agent, TestBed, eventually};

const CAPTURE: (&str, &str) = ("sockmesh.io/capture", "enabled");

fn manifest(name: &str) -> Result<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/base")
        .join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    Ok(serde_norway::from_str(&text)?)
}

/// `(path, container port)` of every HTTP probe of the agent container and of the scrape
/// annotations, with named ports resolved through the container's declared ports.
fn probes(daemonset: &Value) -> Result<Vec<(String, String, u16)>> {
    let pod = &daemonset["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let declared: BTreeMap<&str, u16> = container["ports"]
        .as_array()
        .context("no ports declared")?
        .iter()
        .map(|p| {
            Ok((
                p["name"].as_str().context("port without a name")?,
                port(&p["containerPort"])?,
            ))
        })
        .collect::<Result<_>>()?;
    let resolve = |port_ref: &Value| -> Result<u16> {
        match port_ref.as_str() {
            Some(name) => declared
                .get(name)
                .copied()
                .with_context(|| format!("port {name} not declared")),
            None => port(port_ref),
        }
    };
    let mut out = Vec::new();
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        let get = &container[probe]["httpGet"];
        if get.is_object() {
            let path = get["path"].as_str().context("probe without a path")?;
            out.push((probe.to_owned(), path.to_owned(), resolve(&get["port"])?));
        }
    }
    let annotations = &pod["metadata"]["annotations"];
    if annotations["prometheus.io/scrape"] == "true" {
        let scrape_port = annotations["prometheus.io/port"]
            .as_str()
            .context("no prometheus.io/port")?;
        let path = annotations["prometheus.io/path"]
            .as_str()
            .unwrap_or("/metrics");
        out.push((
            "prometheus scrape".to_owned(),
            path.to_owned(),
            scrape_port.parse()?,
        ));
    }
    Ok(out)
}

fn port(v: &Value) -> Result<u16> {
    Ok(u16::try_from(
        v.as_u64()
            .with_context(|| format!("{v} is not a port number"))?,
    )?)
}

/// The port in the default of `flag` as `sockmesh run --help` prints it (`[default: 0.0.0.0:15021]`).
fn default_port(help: &str, flag: &str) -> Result<u16> {
    let mut lines = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(flag));
    lines
        .next()
        .with_context(|| format!("{flag} not in `sockmesh run --help`"))?;
    for line in lines.take_while(|l| !l.trim_start().starts_with("--")) {
        if let Some(rest) = line.trim().strip_prefix("[default: ") {
            let addr = rest.trim_end_matches(']');
            return Ok(addr.rsplit(':').next().unwrap_or_default().parse()?);
        }
    }
    bail!("{flag} has no default")
}

#[test]
fn every_probe_path_of_the_daemonset_answers_on_the_port_it_names() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let probes = probes(&manifest("daemonset.yaml")?)?;
    assert!(
        probes.iter().any(|(p, ..)| p == "livenessProbe")
            && probes.iter().any(|(p, ..)| p == "readinessProbe"),
        "{probes:?}"
    );
    let help = Command::new(testbed::sockmesh_bin()?)
        .args(["run", "--help"])
        .output()?;
    let help = String::from_utf8(help.stdout)?;

    let bed = TestBed::new("daemonset-probes")?;
    let n1 = bed.node("n1")?;
    bed.label_namespace("test1", CAPTURE.0, CAPTURE.1);
    let _sleep = n1.pod("test1", "sleep")?;
    let agent = Agent::start(&n1, &bed.write_config()?)?;
    // Which of the agent's servers listens on a container port by default, and where this
    // agent runs it.
    let servers = [
        ("--readiness-addr", agent.readiness_addr()),
        ("--metrics-addr", agent.metrics_addr()),
        ("--admin-addr", agent.admin_addr()),
    ];
    for (probe, path, container_port) in &probes {
        let mut at = None;
        for (flag, addr) in servers {
            if default_port(&help, flag)? == *container_port {
                at = Some(addr);
            }
        }
        let addr = at.with_context(|| {
            format!("{probe}: no agent server listens on port {container_port}")
        })?;
        let url = format!("http://{addr}{path}");
        eventually(Duration::from_secs(10), || {
            Ok(ureq::get(&url).call().is_ok_and(|r| r.status() == 200))
        })
        .with_context(|| {
            format!(
                "{probe}: GET {path} on container port {container_port} ({url}):\n{}",
                agent.log()
            )
        })?;
        eprintln!("{probe}: GET {path} on port {container_port}: 200");
    }
    agent.stop()
}
