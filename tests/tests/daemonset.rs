//! `deploy/base` against running agents: every probe (and the Prometheus scrape) the DaemonSet
//! declares answers 200 on the port it names; the ClusterRole and Role grant exactly the requests
//! an agent in `--kubernetes` mode makes; and the uninstall design: SIGTERM after the DaemonSet was
//! deleted removes capture (pods talk directly), SIGTERM with it present keeps the pins (refused
//! until a new agent adopts them).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use testbed::{Agent, FailKind, Node, Pod, TestBed, eventually};

const CAPTURE: (&str, &str) = ("sockmesh.io/capture", "enabled");

const AGENT_NAMESPACE: &str = "sockmesh-system";
const DAEMONSET: &str = "sockmesh-agent";

/// Every document of a file in `deploy/base`.
fn manifests(name: &str) -> Result<Vec<Value>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/base")
        .join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Ok(serde::Deserialize::deserialize(doc)?))
        .collect()
}

fn manifest(name: &str) -> Result<Value> {
    manifests(name)?
        .into_iter()
        .next()
        .with_context(|| format!("{name} is empty"))
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

/// What `kubectl apply -k deploy/base` puts into the API that the agent reads about itself: its
/// namespace, its DaemonSet, and one agent pod per node owned by that DaemonSet (as the DaemonSet
/// controller would create it). Returns the `--pod-name`/`--pod-namespace` flags per node.
fn install(bed: &TestBed, nodes: &[&Node]) -> Result<Vec<Vec<String>>> {
    let api = bed.api()?;
    api.apply_object(manifest("namespace.yaml")?)?;
    api.apply_object(manifest("daemonset.yaml")?)?;
    let ds = api
        .get("apps/v1", "DaemonSet", AGENT_NAMESPACE, DAEMONSET)
        .context("the DaemonSet was applied")?;
    let uid = ds["metadata"]["uid"].as_str().context("DaemonSet uid")?;
    let mut flags = Vec::new();
    for node in nodes {
        let name = format!("{DAEMONSET}-{}", node.name());
        api.apply_object(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": AGENT_NAMESPACE,
                "labels": {"app.kubernetes.io/name": DAEMONSET},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": DAEMONSET,
                    "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"nodeName": node.name(), "serviceAccountName": DAEMONSET,
                "containers": [{"name": "agent", "image": "sockmesh-agent"}]},
            "status": {"phase": "Running"}
        }))?;
        flags.push(vec![
            "--pod-name".to_owned(),
            name,
            "--pod-namespace".to_owned(),
            AGENT_NAMESPACE.to_owned(),
        ]);
    }
    Ok(flags)
}

/// An agent in `--kubernetes` mode that runs as the installed DaemonSet's pod on `node`, once its
/// uninstall watch is open.
fn start_agent(node: &Node, pod_flags: &[String]) -> Result<Agent> {
    let flags: Vec<&str> = pod_flags.iter().map(String::as_str).collect();
    let mut agent = Agent::start_kubernetes(node, &flags)?;
    agent.wait_for_log("watching the agent's DaemonSet", Duration::from_secs(10))?;
    Ok(agent)
}

/// Two nodes, a mesh client on n1 and a mesh server on n2 (STRICT), sockmesh installed.
struct Mesh {
    bed: TestBed,
    nodes: (Node, Node),
    sleep: Pod,
    httpbin: Pod,
    _server: testbed::Process,
    flags: Vec<Vec<String>>,
}

fn mesh(name: &str) -> Result<Option<Mesh>> {
    if !testbed::require_root() {
        return Ok(None);
    }
    testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"));
    let bed = TestBed::kubernetes(name)?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    bed.label_namespace("test1", "istio-injection", "enabled");
    let sleep = n1.pod("test1", "sleep")?;
    let httpbin = n2.pod("test1", "httpbin")?;
    let server = httpbin.serve_echo(8000)?;
    std::fs::write(
        bed.config_dir().join("strict.yaml"),
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  \
         namespace: test1\nspec:\n  mtls:\n    mode: STRICT\n",
    )?;
    bed.api()?.install_istio_crds();
    bed.publish()?;
    let flags = install(&bed, &[&n1, &n2])?;
    Ok(Some(Mesh {
        bed,
        nodes: (n1, n2),
        sleep,
        httpbin,
        _server: server,
        flags,
    }))
}

impl Mesh {
    /// One exchange; `true` when it went through the server's proxy (the app then sees its own
    /// pod address as the peer), `false` when it arrived directly from the client pod.
    fn proxied(&self, msg: &str) -> Result<bool> {
        let reply = self.sleep.connect(self.httpbin.v4(8000), msg)?;
        let peer = reply.peer.ip();
        ensure!(
            peer == self.httpbin.ipv4() || peer == self.sleep.ipv4(),
            "unexpected peer {peer}"
        );
        Ok(peer == self.httpbin.ipv4())
    }
}

fn pinned(node: &Node) -> Result<Vec<String>> {
    let mut names: Vec<String> = testbed::bpf::cgroup_programs(node.cgroup().path())?
        .into_iter()
        .map(|(_, name)| name)
        .collect();
    names.sort();
    Ok(names)
}

#[test]
fn sigterm_after_the_daemonset_was_deleted_removes_capture() -> Result<()> {
    let Some(m) = mesh("ds-uninstall")? else {
        return Ok(());
    };
    let (n1, n2) = (&m.nodes.0, &m.nodes.1);
    let mut agents = vec![start_agent(n1, &m.flags[0])?, start_agent(n2, &m.flags[1])?];
    assert!(m.proxied("meshed")?, "through both proxies while installed");

    // `kubectl delete -k` removes the DaemonSet (and with it the RBAC) before the kubelet stops
    // the agents: they decide from what their open watch saw.
    m.bed
        .api()?
        .delete("apps/v1", "DaemonSet", AGENT_NAMESPACE, DAEMONSET)?;
    for agent in &mut agents {
        agent.wait_for_log("uninstall seen", Duration::from_secs(10))?;
    }
    for agent in agents {
        let log_of = agent.log();
        agent.stop()?;
        ensure!(
            log_of.contains("uninstall seen"),
            "agent saw the deletion:\n{log_of}"
        );
    }
    for node in [n1, n2] {
        assert!(!node.pin_dir().exists(), "pins of {} removed", node.name());
        assert_eq!(
            pinned(node)?,
            Vec::<String>::new(),
            "nothing attached on {}",
            node.name()
        );
    }
    assert!(
        !m.proxied("direct")?,
        "the pods reach each other directly once sockmesh is gone"
    );
    Ok(())
}

#[test]
fn sigterm_with_the_daemonset_present_keeps_capture_fail_closed() -> Result<()> {
    let Some(m) = mesh("ds-restart")? else {
        return Ok(());
    };
    let (n1, n2) = (&m.nodes.0, &m.nodes.1);
    let _client_agent = start_agent(n1, &m.flags[0])?;
    let server_agent = start_agent(n2, &m.flags[1])?;
    assert!(m.proxied("meshed")?);

    server_agent.stop()?;
    assert!(n2.pin_dir().exists(), "pins stay for the next agent");
    assert_eq!(pinned(n2)?, ["connect4", "connect6"]);
    let failed = m.sleep.connect_fails(m.httpbin.v4(8000), "while down")?;
    assert!(
        matches!(
            failed,
            FailKind::Refused | FailKind::Reset | FailKind::Closed
        ),
        "refused while no agent runs on n2: {failed:?}"
    );

    let _new_server_agent = start_agent(n2, &m.flags[1])?;
    eventually(Duration::from_secs(10), || {
        Ok(m.proxied("adopted").unwrap_or(false))
    })
    .context("the new agent adopts the pins")?;
    Ok(())
}

/// `(group, resource, verb)` of every rule in a ClusterRole/Role document, with the
/// `resourceNames` a rule narrows to.
fn granted(docs: &[Value]) -> BTreeMap<(String, String, String), Vec<String>> {
    let mut out = BTreeMap::new();
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        for rule in doc["rules"].as_array().into_iter().flatten() {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        out.insert(
                            (group.clone(), resource.clone(), verb),
                            list("resourceNames"),
                        );
                    }
                }
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_the_requests_the_agent_makes() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"));
    let bed = TestBed::kubernetes("ds-rbac")?;
    let n1 = bed.node("n1")?;
    bed.label_namespace("test1", "istio-injection", "enabled");
    let _sleep = n1.pod("test1", "sleep")?;
    // Everything the agent can read: Istio's kinds (legacy ones too), a DestinationRule naming a
    // credential Secret, and Istio's meshConfig.
    std::fs::write(
        bed.config_dir().join("policy.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: ext\n  \
         namespace: test1\nspec:\n  host: ext.example.com\n  trafficPolicy:\n    tls:\n      \
         mode: MUTUAL\n      credentialName: ext-client\n---\napiVersion: v1\nkind: ConfigMap\n\
         metadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    \
         enableAutoMtls: true\n",
    )?;
    let api = bed.api()?;
    api.install_istio_crds();
    api.install_legacy_istio_crds();
    bed.publish()?;
    let flags = install(&bed, &[&n1])?;
    let agent = start_agent(&n1, &flags[0])?;

    let mut rules = manifests("clusterrole.yaml")?;
    rules.extend(manifests("role.yaml")?);
    let granted = granted(&rules);
    let used = || -> BTreeSet<(String, String, String)> {
        api.requests()
            .into_iter()
            .filter(|r| !r.resource.is_empty())
            .map(|r| (r.group, r.resource, r.verb))
            .collect()
    };
    let keys: BTreeSet<_> = granted.keys().cloned().collect();
    // Watches open one after another after the first lists: give them a moment.
    let all_used = eventually(Duration::from_secs(15), || Ok(used() == keys));
    let used = used();
    eprintln!("(group, resource, verb) the agent used: {used:?}");
    assert!(
        used.is_subset(&keys),
        "requests no rule grants: {:?}\n{}",
        used.difference(&keys).collect::<Vec<_>>(),
        agent.log()
    );
    assert!(
        all_used.is_ok(),
        "rules granted and never used: {:?}",
        keys.difference(&used).collect::<Vec<_>>()
    );
    // A rule narrowed by resourceNames holds only for requests that name one of them (a get of
    // that name, or list/watch with a metadata.name field selector), and a Role only in its
    // namespace.
    for request in api.requests() {
        let key = (
            request.group.clone(),
            request.resource.clone(),
            request.verb.clone(),
        );
        let Some(names) = granted.get(&key).filter(|n| !n.is_empty()) else {
            continue;
        };
        let query = request.query.replace("%3D", "=");
        let named = names.iter().any(|n| {
            request.name.as_deref() == Some(n.as_str())
                || query.contains(&format!("fieldSelector=metadata.name={n}"))
        });
        assert!(named, "{request:?} is outside resourceNames {names:?}");
    }
    let role = manifest("role.yaml")?;
    let role_namespace = role["metadata"]["namespace"]
        .as_str()
        .context("Role namespace")?;
    for request in api.requests().iter().filter(|r| r.resource == "daemonsets") {
        assert_eq!(
            request.namespace.as_deref(),
            Some(role_namespace),
            "{request:?}"
        );
    }
    Ok(())
}

/// `kubectl delete -k` then `kubectl apply -k` while the old agents still drain: the new agents
/// adopt the pins, and the old ones, though they saw the deletion, leave them to the new ones.
#[test]
fn pins_adopted_by_a_newer_agent_stay_when_the_old_one_stops() -> Result<()> {
    let Some(m) = mesh("ds-reapply")? else {
        return Ok(());
    };
    let (n1, n2) = (&m.nodes.0, &m.nodes.1);
    let mut old = vec![start_agent(n1, &m.flags[0])?, start_agent(n2, &m.flags[1])?];
    let api = m.bed.api()?;
    api.delete("apps/v1", "DaemonSet", AGENT_NAMESPACE, DAEMONSET)?;
    for agent in &mut old {
        agent.wait_for_log("uninstall seen", Duration::from_secs(10))?;
    }
    let flags = install(&m.bed, &[n1, n2])?;
    let _new = (start_agent(n1, &flags[0])?, start_agent(n2, &flags[1])?);
    for mut agent in old {
        let pid = agent.pid();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid)?),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        agent.wait_for_log("a newer agent holds the pins", Duration::from_secs(10))?;
        agent.stop()?;
    }
    for node in [n1, n2] {
        assert_eq!(
            pinned(node)?,
            ["connect4", "connect6"],
            "{} keeps capture",
            node.name()
        );
    }
    assert!(m.proxied("through the new agents")?);
    Ok(())
}
