//! The agents as they run in a cluster: `--kubernetes`, against the test bed's API server (a
//! small real one: no kube-apiserver can run on this machine), on nodes whose pods sit in the
//! kubelet's cgroup layout. Every agent knows every node's pods and enrolls only its own.
use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use testbed::seed::{self, Seed};
use testbed::{Agent, FailKind, Node, Pod, PodOptions, TestBed, eventually};

/// How long a change made through the API may take to reach the data path: watch latency plus
/// the periodic CRD rediscovery (5 s), with room for a loaded CI machine.
const PROPAGATION: Duration = Duration::from_secs(20);

fn bed(name: &str) -> Result<Option<TestBed>> {
    if !testbed::require_root() {
        return Ok(None);
    }
    testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"));
    Ok(Some(TestBed::kubernetes(name)?))
}

fn strict(namespace: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  \
         namespace: {namespace}\nspec:\n  mtls:\n    mode: STRICT\n"
    )
}

fn mode(namespace: &str, mode: &str) -> String {
    strict(namespace).replace("STRICT", mode)
}

/// The seed article's scenario, every step in turn, with both agents in `--kubernetes` mode and
/// the policies applied through the API.
#[test]
fn seed_scenario_with_agents_in_kubernetes_mode() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"));
    let mut seed = Seed::build_kubernetes("k8s-seed")?;
    seed.start_agents(&[])?;
    for step in seed::steps() {
        let report = seed.run_step(&step)?;
        println!("{}\n{report}", step.title);
        report.assert_passed();
    }
    Ok(())
}

/// A Service whose two endpoints sit on two other nodes, one in the mesh and one not: the client's
/// agent picks mTLS or plaintext per endpoint, which it can only do knowing the remote pods. The
/// mesh endpoint is STRICT, so a plaintext attempt would be refused; reached by pod IP too.
#[test]
fn service_endpoints_on_other_nodes_get_auto_mtls_per_endpoint() -> Result<()> {
    let Some(bed) = bed("k8s-endpoints")? else {
        return Ok(());
    };
    let (n1, n2, n3) = (bed.node("n1")?, bed.node("n2")?, bed.node("n3")?);
    bed.label_namespace("app", "istio-injection", "enabled");
    let client = n1.pod("app", "client")?;
    let web = |node: &Node, name: &str, mesh: bool| -> Result<Pod> {
        let mut options = PodOptions::new().label("app", "web").service_account(name);
        if !mesh {
            options = options.label("sidecar.istio.io/inject", "false");
        }
        node.pod_with("app", name, options)
    };
    let (meshed, outside) = (web(&n2, "web-mesh", true)?, web(&n3, "web-plain", false)?);
    let _servers = (meshed.serve_echo(8000)?, outside.serve_echo(8000)?);
    std::fs::write(
        bed.config_dir().join("web.yaml"),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: app\nspec:\n  \
             clusterIP: 10.96.50.10\n  selector:\n    app: web\n  ports:\n  - port: 80\n    \
             targetPort: 8000\n---\n{}",
            strict("app")
        ),
    )?;
    bed.api()?.install_istio_crds();
    bed.publish()?;
    let agents = [
        Agent::start_kubernetes(&n1, &[])?,
        Agent::start_kubernetes(&n2, &[])?,
        Agent::start_kubernetes(&n3, &[])?,
    ];
    let wire = bed.wire_capture()?;
    let mut reached = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reached.len() < 2 {
        ensure!(
            Instant::now() < deadline,
            "only {reached:?} answered through the Service; client agent log:\n{}",
            agents[0].log()
        );
        let reply = client.connect("10.96.50.10:80", "via-service")?;
        reached.insert(reply.server);
    }
    let direct = client.connect(meshed.v4(8000), "by-pod-ip")?;
    assert_eq!(direct.server, "app/web-mesh");
    let wire = wire.finish()?;
    let flows = wire.flows();
    let to = |pod: &Pod| -> Vec<_> {
        flows
            .iter()
            .filter(|f| f.server.ip() == pod.ipv4())
            .collect()
    };
    ensure!(
        !to(&meshed).is_empty() && to(&meshed).iter().all(|f| f.is_tls()),
        "every flow to the mesh endpoint is mTLS: {:?}",
        to(&meshed)
    );
    ensure!(
        !wire.contains(b"by-pod-ip"),
        "the pod-IP connection crossed the wire in plaintext"
    );
    ensure!(
        to(&outside).iter().any(|f| f.contains(b"via-service")),
        "the endpoint outside the mesh is reached in plaintext: {:?}",
        to(&outside)
    );
    let workloads: serde_json::Value = serde_json::from_str(&agents[0].admin_get("/workloads")?)?;
    let enrolled: Vec<&str> = workloads
        .as_array()
        .context("workloads list")?
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(enrolled, ["client"], "n1's agent enrolls only n1's pods");
    Ok(())
}

/// Policy through the API during traffic: Istio's CRDs installed after the agents started (STRICT
/// then enforced without a restart), a PeerAuthentication changed under an open connection, and
/// an API outage (last state kept, traffic unaffected, changes made meanwhile applied after).
#[test]
fn policy_follows_the_api_through_late_crds_changes_and_an_outage() -> Result<()> {
    let Some(bed) = bed("k8s-policy")? else {
        return Ok(());
    };
    let TwoNodes {
        n1,
        n2,
        sleep,
        outsider,
        httpbin,
        _server,
    } = TwoNodes::build(&bed)?;
    bed.publish()?;
    let _agents = (
        Agent::start_kubernetes(&n1, &[])?,
        Agent::start_kubernetes(&n2, &[])?,
    );
    let target = httpbin.v4(8000);
    outsider
        .connect(target, "permissive")
        .context("no Istio CRDs yet: PERMISSIVE")?;

    // Istio's CRDs and a STRICT policy arrive after the agents.
    let api = bed.api()?;
    api.install_istio_crds();
    api.apply(&strict("test1"))?;
    refused_within(&outsider, target, PROPAGATION).context("STRICT after the CRDs appear")?;
    sleep
        .connect(target, "mesh")
        .context("mesh client under STRICT")?;

    // A change during traffic: an open mesh connection survives STRICT → PERMISSIVE.
    let mut cmd = Command::new(testbed::pod_tool()?);
    cmd.args(["hold", &target.to_string(), "30", "--interval", "0.2"]);
    let mut hold = sleep.spawn(cmd)?;
    hold.wait_for_log("connected", Duration::from_secs(5))?;
    api.apply(&mode("test1", "PERMISSIVE"))?;
    eventually(PROPAGATION, || Ok(outsider.connect(target, "open").is_ok()))
        .context("PERMISSIVE applied through the API")?;
    ensure!(
        hold.wait_timeout(Duration::from_millis(10))?.is_none(),
        "the open connection survived the change: {}",
        hold.log()
    );

    // An outage: the last state stays, traffic flows; a change made meanwhile lands afterwards.
    api.apply(&strict("test1"))?;
    refused_within(&outsider, target, PROPAGATION)?;
    api.set_down(true);
    api.apply(&mode("test1", "PERMISSIVE"))?;
    std::thread::sleep(Duration::from_secs(3));
    sleep.connect(target, "during-outage")?;
    assert_eq!(
        outsider.connect_fails(target, "during-outage")?,
        FailKind::Reset,
        "STRICT still enforced while the API is down"
    );
    api.set_down(false);
    eventually(PROPAGATION, || {
        Ok(outsider.connect(target, "after-outage").is_ok())
    })
    .context("the change made during the outage applies after it")?;
    let status = hold.wait_timeout(Duration::from_secs(40))?;
    ensure!(
        status.is_some_and(|s| s.success()),
        "the held connection ran to its end through every change: {}",
        hold.log()
    );
    Ok(())
}

/// Two nodes: `test1/sleep` (in the mesh) and `test3/sleep` (outside it) on n1, `test1/httpbin`
/// echoing on 8000 on n2.
struct TwoNodes {
    n1: Node,
    n2: Node,
    sleep: Pod,
    outsider: Pod,
    httpbin: Pod,
    _server: testbed::Process,
}

impl TwoNodes {
    fn build(bed: &TestBed) -> Result<TwoNodes> {
        let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
        bed.label_namespace("test1", "istio-injection", "enabled");
        let sleep = n1.pod("test1", "sleep")?;
        let outsider = n1.pod("test3", "sleep")?;
        let httpbin = n2.pod("test1", "httpbin")?;
        let _server = httpbin.serve_echo(8000)?;
        Ok(TwoNodes {
            n1,
            n2,
            sleep,
            outsider,
            httpbin,
            _server,
        })
    }
}

fn refused_within(client: &Pod, target: std::net::SocketAddr, limit: Duration) -> Result<()> {
    eventually(limit, || Ok(client.connect(target, "strict?").is_err()))
}

/// A restart while the API is down stays closed: the new agent does not enroll (or sweep what the
/// old one pinned) before its first full list, so the STRICT pod is never reachable uncaptured.
#[test]
fn restart_during_an_api_outage_stays_closed() -> Result<()> {
    let Some(bed) = bed("k8s-restart")? else {
        return Ok(());
    };
    let TwoNodes {
        n1,
        n2,
        sleep,
        outsider,
        httpbin,
        _server,
    } = TwoNodes::build(&bed)?;
    std::fs::write(bed.config_dir().join("strict.yaml"), strict("test1"))?;
    bed.api()?.install_istio_crds();
    bed.publish()?;
    let _client_agent = Agent::start_kubernetes(&n1, &[])?;
    let old = Agent::start_kubernetes(&n2, &[])?;
    let target = httpbin.v4(8000);
    sleep.connect(target, "before")?;
    outsider.connect_fails(target, "before")?;

    let api = bed.api()?;
    api.set_down(true);
    let mut new = Agent::spawn_kubernetes(&n2, &[])?;
    new.wait_for_log("waiting for the first full list", Duration::from_secs(20))?;
    old.stop()?;
    std::thread::sleep(Duration::from_secs(2));
    outsider
        .connect_fails(target, "uncaptured?")
        .context("the STRICT pod stays closed while no agent has listed")?;
    ensure!(
        !new.log().contains("removing stale"),
        "nothing swept before the first list: {}",
        new.log()
    );
    api.set_down(false);
    new.wait_for_log("agent ready", PROPAGATION)?;
    eventually(PROPAGATION, || Ok(sleep.connect(target, "after").is_ok()))
        .context("the new agent serves the pod once it has listed")?;
    outsider.connect_fails(target, "after")?;
    Ok(())
}
