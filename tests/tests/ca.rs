//! Workload certificates from `sockmesh ca` over Istio's CA API, end to end: two nodes' agents in
//! `--kubernetes` mode (the test bed's API server answers their watches and the CA's TokenReview
//! and pod lookups) get their certificates from a `sockmesh ca` process, traffic flows with mTLS
//! under STRICT, a node agent asking for an identity of a pod on another node is refused and
//! counted, traffic keeps flowing on the held certificates while the CA is down for a minute, and
//! a root rotation (old → both → new signing key → new) under steady traffic drops nothing.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use testbed::{Agent, Node, Pod, Process, ServiceAccountToken, TestBed, eventually};

const AGENT_NS: &str = "sockmesh-system";
const AGENT_SA: &str = "sockmesh-agent";

fn bed(name: &str) -> Result<Option<TestBed>> {
    if !testbed::require_root() {
        return Ok(None);
    }
    testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"));
    Ok(Some(TestBed::kubernetes(name)?))
}

fn spiffe(ns: &str, sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
}

/// A plug-in CA directory (Istio's layout) made with openssl: a P-256 root named `cn` that signs.
fn plug_in_ca(dir: &Path, cn: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "30", "-subj"])
        .arg(format!("/O=cluster.local/CN={cn}"))
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args([
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ])
        .arg("-keyout")
        .arg(dir.join("ca-key.pem"))
        .arg("-out")
        .arg(dir.join("ca-cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()?;
    ensure!(status.success(), "openssl req for {cn}: {status}");
    for copy in ["root-cert.pem", "cert-chain.pem"] {
        std::fs::copy(dir.join("ca-cert.pem"), dir.join(copy))?;
    }
    Ok(())
}

/// A `sockmesh ca` process (in `host`'s agent cgroup, root netns) on `port`.
struct Ca {
    process: Process,
    port: u16,
    metrics: u16,
}

impl Ca {
    fn start(host: &Node, api_kubeconfig: &Path, ca_dir: &Path, port: u16) -> Result<Ca> {
        let metrics = free_port()?;
        let mut cmd = Command::new(testbed::sockmesh_bin()?);
        cmd.arg("ca")
            .arg("--ca-dir")
            .arg(ca_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .args(["--server-name", "127.0.0.1"])
            .env("KUBECONFIG", api_kubeconfig)
            .env("RUST_LOG", "info");
        let mut process = host.spawn_agent(cmd)?;
        process.wait_for_log("serving Istio's CA API", Duration::from_secs(20))?;
        Ok(Ca {
            process,
            port,
            metrics,
        })
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn metric(&self, sample: &str) -> Result<Option<f64>> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics);
        let text = ureq::get(&url).call()?.body_mut().read_to_string()?;
        Ok(sample_in(&text, sample))
    }
}

fn sample_in(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Flags that make `node`'s agent a client of the CA at `addr`, with a token bound to an agent
/// pod on `token_node` (normally `node` itself).
fn ca_flags(
    bed: &TestBed,
    addr: &str,
    root: &Path,
    node: &Node,
    token_node: &str,
) -> Result<Vec<String>> {
    let token = bed.api()?.issue_token(ServiceAccountToken {
        namespace: AGENT_NS.into(),
        service_account: AGENT_SA.into(),
        pod: Some((format!("sockmesh-agent-{token_node}"), token_node.into())),
        audiences: vec!["istio-ca".into()],
    });
    let path = bed
        .workdir()
        .join(format!("token-{}-as-{token_node}", node.name()));
    std::fs::write(&path, token)?;
    Ok(vec![
        "--ca-addr".into(),
        addr.into(),
        "--ca-root".into(),
        root.display().to_string(),
        "--ca-token".into(),
        path.display().to_string(),
    ])
}

fn start_agent(node: &Node, flags: &[String], extra: &[&str]) -> Result<Agent> {
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    Agent::start_kubernetes(node, &all)
}

fn strict(namespace: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  \
         namespace: {namespace}\nspec:\n  mtls:\n    mode: STRICT\n"
    )
}

/// `/certs` of an agent: (identity, serial, issuer).
fn certs(agent: &Agent) -> Result<Vec<(String, String, String)>> {
    let certs: Value = serde_json::from_str(&agent.admin_get("/certs")?)?;
    certs
        .as_array()
        .context("/certs is an array")?
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().map(str::to_owned).context(k.to_owned());
            Ok((s("identity")?, s("serial")?, s("issuer")?))
        })
        .collect()
}

/// The test1 pair: `sleep` on n1, `httpbin` (echo on 8000) on n2, STRICT in test1.
struct Pair {
    sleep: Pod,
    httpbin: Pod,
    _server: Process,
}

fn pair(bed: &TestBed, n1: &Node, n2: &Node) -> Result<Pair> {
    bed.label_namespace("test1", "istio-injection", "enabled");
    let sleep = n1.pod("test1", "sleep")?;
    let httpbin = n2.pod("test1", "httpbin")?;
    let server = httpbin.serve_echo(8000)?;
    let api = bed.api()?;
    api.install_istio_crds();
    api.apply(&strict("test1"))?;
    bed.publish()?;
    Ok(Pair {
        sleep,
        httpbin,
        _server: server,
    })
}

/// The server agent saw a mesh mTLS connection from test1/sleep.
fn assert_mtls_from_sleep(server: &Agent) -> Result<()> {
    eventually(Duration::from_secs(5), || {
        Ok(server.access_log()?.iter().any(|e| {
            e["direction"] == "inbound"
                && e["mode"] == "mutual_tls"
                && e["src.principal"] == spiffe("test1", "sleep").as_str()
        }))
    })
    .with_context(|| format!("server access log: {:#?}", server.access_log()))
}

#[test]
fn agents_get_certificates_from_sockmesh_ca_refusals_are_counted_and_outages_survived() -> Result<()>
{
    let Some(bed) = bed("ca-e2e")? else {
        return Ok(());
    };
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    let pair = pair(&bed, &n1, &n2)?;
    let ca_dir = bed.workdir().join("sockmesh-ca");
    plug_in_ca(&ca_dir, "e2e root")?;
    let root = ca_dir.join("root-cert.pem");
    let port = free_port()?;
    let ca = Ca::start(&n1, bed.api()?.kubeconfig(), &ca_dir, port)?;
    let addr = ca.addr();

    // A node agent presenting n1's token on n2 asks for test1/httpbin, a pod of n2: refused.
    let rogue = start_agent(&n2, &ca_flags(&bed, &addr, &root, &n2, "n1")?, &[])?;
    eventually(Duration::from_secs(10), || {
        Ok(ca.metric("sockmesh_ca_refusals_total{reason=\"not_on_caller_node\"}")? >= Some(1.0))
    })
    .with_context(|| ca.process.log())?;
    let refusal = ca.process.log();
    let line = refusal
        .lines()
        .find(|l| l.contains("certificate request refused"))
        .context("refusal log line")?;
    for part in [
        "sockmesh-system/sockmesh-agent (pod sockmesh-agent-n1 on n1)",
        &spiffe("test1", "httpbin"),
        "not_on_caller_node",
    ] {
        ensure!(line.contains(part), "{part:?} missing in {line}");
    }
    ensure!(
        rogue
            .scrape()?
            .contains("sockmesh_ca_requests_total{result=\"refused\"}"),
        "the agent counts the refusal"
    );
    rogue.kill()?;

    // The real agents: certificates from the CA, mTLS under STRICT.
    let ttl = "90s";
    let client = start_agent(
        &n1,
        &ca_flags(&bed, &addr, &root, &n1, "n1")?,
        &["--cert-ttl", ttl],
    )?;
    let server = start_agent(
        &n2,
        &ca_flags(&bed, &addr, &root, &n2, "n2")?,
        &["--cert-ttl", ttl],
    )?;
    let target = pair.httpbin.v4(8000);
    pair.sleep
        .connect(target, "through the CA's certificates")?;
    assert_mtls_from_sleep(&server)?;
    let held = certs(&server)?;
    ensure!(
        held.iter()
            .any(|c| c.0 == spiffe("test1", "httpbin") && c.2.contains("e2e root")),
        "n2 holds httpbin's certificate from the CA: {held:?}"
    );
    ensure!(ca.metric("sockmesh_ca_certificates_issued_total")? >= Some(2.0));

    // The CA stops for a minute: renewal (at 45 s) fails, the held certificates keep serving.
    let before = certs(&client)?;
    drop(ca);
    let down_since = Instant::now();
    let mut ok = 0;
    while down_since.elapsed() < Duration::from_secs(60) {
        pair.sleep
            .connect(target, "while the CA is down")
            .with_context(|| format!("after {:?} without CA", down_since.elapsed()))?;
        ok += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
    ensure!(
        certs(&client)? == before,
        "the held certificates stay while the CA is down"
    );
    ensure!(
        client
            .scrape()?
            .contains("sockmesh_ca_requests_total{result=\"unavailable\"}"),
        "failed renewals are counted"
    );
    println!("{ok} connections while the CA was down for 60 s");

    // Back: the next retry renews.
    let ca = Ca::start(&n1, bed.api()?.kubeconfig(), &ca_dir, port)?;
    eventually(Duration::from_secs(40), || Ok(certs(&client)? != before))
        .with_context(|| format!("no renewal after the CA came back: {}", client.log()))?;
    pair.sleep.connect(target, "after the outage")?;
    drop(ca);
    drop(server);
    Ok(())
}

/// Directories of a rotation: old key + old root, old key + both roots, new key + both roots,
/// new key + new root.
fn rotation(work: &Path) -> Result<[PathBuf; 4]> {
    let (old, new) = (work.join("ca-old"), work.join("ca-new"));
    plug_in_ca(&old, "root old")?;
    plug_in_ca(&new, "root new")?;
    let both = format!(
        "{}{}",
        std::fs::read_to_string(old.join("root-cert.pem"))?,
        std::fs::read_to_string(new.join("root-cert.pem"))?
    );
    let mut dirs = Vec::new();
    for (name, signer) in [("ca-both-old", &old), ("ca-both-new", &new)] {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir)?;
        for file in ["ca-cert.pem", "ca-key.pem", "cert-chain.pem"] {
            std::fs::copy(signer.join(file), dir.join(file))?;
        }
        std::fs::write(dir.join("root-cert.pem"), &both)?;
        dirs.push(dir);
    }
    Ok([old, dirs[0].clone(), dirs[1].clone(), new])
}

/// How many times an agent replaced its trust bundle by one of `roots` roots.
fn bundle_swaps(agent: &Agent, roots: usize) -> usize {
    let needle = format!("roots={roots} ");
    agent
        .log()
        .lines()
        .filter(|l| l.contains("mesh trust bundle replaced by the CA's") && l.contains(&needle))
        .count()
}

#[test]
fn root_rotation_under_steady_traffic_drops_nothing() -> Result<()> {
    let Some(bed) = bed("ca-rotate")? else {
        return Ok(());
    };
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    let pair = pair(&bed, &n1, &n2)?;
    let dirs = rotation(bed.workdir())?;
    // The CA's own TLS certificate moves to the new root too; `--ca-root` names the old root
    // only: agents trust the new one for the CA through the bundle the "both" step brought.
    let roots = dirs[0].join("root-cert.pem");
    let port = free_port()?;
    let kubeconfig = bed.api()?.kubeconfig().to_owned();
    let mut ca = Some(Ca::start(&n1, &kubeconfig, &dirs[0], port)?);
    let addr = format!("127.0.0.1:{port}");
    let ttl = ["--cert-ttl", "8s"];
    let agents = [
        start_agent(&n1, &ca_flags(&bed, &addr, &roots, &n1, "n1")?, &ttl)?,
        start_agent(&n2, &ca_flags(&bed, &addr, &roots, &n2, "n2")?, &ttl)?,
    ];
    let target = pair.httpbin.v4(8000);
    pair.sleep.connect(target, "before the rotation")?;
    assert_mtls_from_sleep(&agents[1])?;

    // Steady traffic: one connection held through the whole rotation, new ones all along.
    let secs = 45;
    let mut cmd = Command::new(testbed::pod_tool()?);
    cmd.args([
        "hold",
        &target.to_string(),
        &secs.to_string(),
        "--interval",
        "0.2",
    ]);
    let mut hold = pair.sleep.spawn(cmd)?;
    hold.wait_for_log("connected", Duration::from_secs(5))?;
    let started = Instant::now();
    let mut new_connections = 0;
    let mut phase = |ca_dir: &Path, done: &dyn Fn() -> Result<bool>, what: &str| -> Result<()> {
        drop(ca.take());
        ca = Some(Ca::start(&n1, &kubeconfig, ca_dir, port)?);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done()? {
            ensure!(Instant::now() < deadline, "{what} within 20 s");
            pair.sleep
                .connect(target, what)
                .with_context(|| format!("new connection during \"{what}\""))?;
            new_connections += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    };
    // At start each agent swapped its --ca-root bundle (both roots) for the CA's (old) once.
    let swaps = |roots, n| agents.iter().all(|a| bundle_swaps(a, roots) >= n);
    ensure!(
        swaps(1, 1) && !swaps(2, 1),
        "the first answer brings the old root only"
    );
    let issued_by = |cn: &str| -> Result<bool> {
        for agent in &agents {
            if !certs(agent)?.iter().all(|c| c.2.contains(cn)) {
                return Ok(false);
            }
        }
        Ok(true)
    };
    phase(&dirs[1], &|| Ok(swaps(2, 1)), "both roots trusted")?;
    phase(
        &dirs[2],
        &|| issued_by("root new"),
        "certificates from the new root",
    )?;
    // One more renewal round, so no certificate of the old root is left anywhere.
    std::thread::sleep(Duration::from_secs(5));
    phase(&dirs[3], &|| Ok(swaps(1, 2)), "old root dropped")?;
    for _ in 0..10 {
        pair.sleep.connect(target, "after the rotation")?;
        new_connections += 1;
    }
    println!(
        "rotation took {:?}; {new_connections} new connections, all answered",
        started.elapsed()
    );
    ensure!(
        hold.wait_timeout(Duration::from_millis(10))?.is_none(),
        "the held connection spans the whole rotation: {}",
        hold.log()
    );
    let status = hold
        .wait_timeout(Duration::from_secs(secs + 15))?
        .context("hold did not finish")?;
    ensure!(
        status.success(),
        "the held connection broke: {}",
        hold.log()
    );
    let report: Value = serde_json::from_str(hold.log().lines().last().unwrap_or_default())?;
    ensure!(report["ok"].as_u64() > Some(100), "hold: {report}");
    println!("held connection: {report}");
    drop(ca);
    Ok(())
}
