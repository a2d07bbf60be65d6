//! `cargo xtask scale`: one agent in `--kubernetes` mode against the test bed's API server holding
//! a large cluster (by default 10,000 pods on 100 other nodes, 2,000 Services, 2,000 policies),
//! measuring the agent's memory and how long a reload takes. The numbers go in
//! docs/performance.md; nothing here is asserted beyond the agent coming up.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use testbed::{AgentPorts, ApiServer, Process, TestBed, kubernetes_command};

use crate::cmd::Cmd;

/// Flags of `cargo xtask scale`.
#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    #[arg(long, default_value_t = 10_000)]
    pub pods: usize,
    #[arg(long, default_value_t = 2_000)]
    pub services: usize,
    /// PeerAuthentications, DestinationRules and AuthorizationPolicies, a third each.
    #[arg(long, default_value_t = 2_000)]
    pub policies: usize,
    /// Reloads measured after the start.
    #[arg(long, default_value_t = 5)]
    pub reloads: usize,
}

const NAMESPACES: usize = 200;
const NODES: usize = 100;
const RELOADED: &str = "configuration reloaded";

pub fn run(root: &Path, args: ScaleArgs) -> Result<()> {
    if Cmd::new("id").arg("-u").read()?.trim() != "0" {
        bail!("the scale run loads eBPF programs and builds cgroups: run it as root");
    }
    let binary = crate::bench::build_agent(root)?;
    let bed = TestBed::kubernetes("scale")?;
    let node = bed.node("n1")?;
    let api = bed.api()?;
    api.install_istio_crds();
    println!(
        "==> loading {} pods, {} services, {} policies into the API server",
        args.pods, args.services, args.policies
    );
    populate(api, &args)?;

    let ports = AgentPorts::of(&node, 0)?;
    let mut cmd = kubernetes_command(&binary, &node, api.kubeconfig(), &ports);
    cmd.args(["--access-log", "off", "--drain-timeout", "1s"])
        .env("RUST_LOG", "sockmesh_agent=info");
    let started = Instant::now();
    let mut agent = node.spawn_agent(cmd)?;
    agent
        .wait_for_log("agent ready", Duration::from_secs(300))
        .context("agent did not come up")?;
    let start_time = started.elapsed();
    let rss_start = memory(&agent)?;

    let mut reloads = Vec::new();
    for i in 0..args.reloads {
        let before = agent.log().matches(RELOADED).count();
        let t = Instant::now();
        api.apply_object(peer_authentication(
            0,
            if i % 2 == 0 { "STRICT" } else { "PERMISSIVE" },
        ))?;
        while agent.log().matches(RELOADED).count() <= before {
            if t.elapsed() > Duration::from_secs(120) {
                bail!("no reload within 120 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        reloads.push(t.elapsed());
    }
    reloads.sort();
    let rss_end = memory(&agent)?;
    println!("\n| measure | value |\n|---|---|");
    println!(
        "| cluster | {} pods on {NODES} other nodes, {} Services, {} policies, {NAMESPACES} namespaces |",
        args.pods, args.services, args.policies
    );
    println!(
        "| start to ready (first list applied) | {:.1} s |",
        start_time.as_secs_f64()
    );
    println!("| RSS after start | {:.0} MiB |", rss_start.0);
    println!("| peak RSS (VmHWM) | {:.0} MiB |", rss_end.1);
    println!(
        "| RSS after {} reloads | {:.0} MiB |",
        args.reloads, rss_end.0
    );
    println!(
        "| reload, one PeerAuthentication changed (median of {}) | {} ms |",
        reloads.len(),
        reloads
            .get(reloads.len() / 2)
            .map_or(0, Duration::as_millis)
    );
    println!(
        "| reload, slowest | {} ms |",
        reloads.last().map_or(0, Duration::as_millis)
    );
    drop(agent);
    Ok(())
}

/// `(VmRSS, VmHWM)` in MiB.
fn memory(agent: &Process) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn populate(api: &ApiServer, args: &ScaleArgs) -> Result<()> {
    for ns in 0..NAMESPACES {
        api.apply_object(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": format!("ns-{ns}"), "labels": {"istio-injection": "enabled"}}}))?;
    }
    for i in 0..args.pods {
        let (ns, app) = (i % NAMESPACES, i % args.services.max(1));
        api.apply_object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("app-{app}-{i}"), "namespace": format!("ns-{ns}"),
                "uid": format!("00000000-0000-4000-8000-{i:012x}"),
                "labels": {"app": format!("app-{app}"), "version": "v1",
                           "pod-template-hash": "5d8f7c9b4"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": format!("app-{app}-5d8f7c9b4"), "uid": "rs", "controller": true}],
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}]},
            "spec": {"nodeName": format!("far-{}", i % NODES), "serviceAccountName": format!("app-{app}"),
                "containers": [{"name": "app", "image": "registry.example/app:1.0",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
            "status": {"phase": "Running", "qosClass": "Burstable",
                "podIP": format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256),
                "conditions": [{"type": "Ready", "status": "True"}]}}))?;
    }
    for s in 0..args.services {
        let ns = s % NAMESPACES;
        api.apply_object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("app-{s}"), "namespace": format!("ns-{ns}")},
            "spec": {"clusterIP": format!("10.96.{}.{}", s / 256, s % 256),
                "selector": {"app": format!("app-{s}")},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))?;
    }
    for p in 0..args.policies {
        let ns = format!("ns-{}", p % NAMESPACES);
        let obj = match p % 3 {
            0 => peer_authentication(p, "STRICT"),
            1 => json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                "metadata": {"name": format!("dr-{p}"), "namespace": ns},
                "spec": {"host": format!("app-{}.{ns}.svc.cluster.local", p % args.services.max(1)),
                         "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}),
            _ => json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": format!("authz-{p}"), "namespace": ns},
                "spec": {"selector": {"matchLabels": {"app": format!("app-{}", p % args.services.max(1))}},
                         "action": "ALLOW",
                         "rules": [{"from": [{"source": {"principals": [format!("cluster.local/ns/{ns}/sa/client")]}}],
                                    "to": [{"operation": {"ports": ["8080"]}}]}]}}),
        };
        api.apply_object(obj)?;
    }
    Ok(())
}

fn peer_authentication(p: usize, mode: &str) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": format!("pa-{p}"), "namespace": format!("ns-{}", p % NAMESPACES)},
        "spec": {"selector": {"matchLabels": {"app": format!("app-{p}")}},
                 "mtls": {"mode": mode}}})
}
