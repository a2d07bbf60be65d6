//! AuthorizationPolicy end to end: two nodes, real agents, real mTLS. The server's proxy decides
//! with the client identity its certificate proves, before a byte reaches the app, on every way a
//! connection arrives, and again for open connections when the policy changes.
use std::{process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use testbed::{Agent, FailKind, Node, Pod, PodOptions, TestBed, eventually};

const CAPTURE: (&str, &str) = ("sockmesh.io/capture", "enabled");
const POLICY_FILE: &str = "authorization.yaml";

/// n1: test1/sleep (sa sleep), test1/other (sa other); n2: test2/httpbin (app=httpbin) echoing
/// on 8000; test3/outside on n1, not in the mesh. Agents on both nodes.
struct Scenario {
    sleep: Pod,
    other: Pod,
    outside: Pod,
    httpbin: Pod,
    server_agent: Agent,
    _client_agent: Agent,
    _servers: Vec<testbed::Process>,
    bed: TestBed,
    _nodes: (Node, Node),
}

impl Scenario {
    fn start(name: &str, policy: &str) -> Result<Option<Scenario>> {
        if !testbed::require_root() {
            return Ok(None);
        }
        testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"));
        let bed = TestBed::new(name)?;
        let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
        bed.label_namespace("test1", CAPTURE.0, CAPTURE.1);
        bed.label_namespace("test2", CAPTURE.0, CAPTURE.1);
        let sleep = n1.pod_with("test1", "sleep", PodOptions::new().service_account("sleep"))?;
        let other = n1.pod_with("test1", "other", PodOptions::new().service_account("other"))?;
        let outside = n1.pod("test3", "outside")?;
        let httpbin = n2.pod_with(
            "test2",
            "httpbin",
            PodOptions::new()
                .service_account("httpbin")
                .label("app", "httpbin"),
        )?;
        let servers = vec![httpbin.serve_echo(8000)?];
        let config = bed.write_config()?;
        std::fs::write(config.join(POLICY_FILE), policy)?;
        let client_agent = Agent::start(&n1, &config)?;
        let server_agent = Agent::start(&n2, &config)?;
        Ok(Some(Scenario {
            sleep,
            other,
            outside,
            httpbin,
            server_agent,
            _client_agent: client_agent,
            _servers: servers,
            bed,
            _nodes: (n1, n2),
        }))
    }

    /// Replaces the policy file atomically; the agents reload within a second.
    fn set_policy(&self, yaml: &str) -> Result<()> {
        let path = self.bed.write_config()?.join(POLICY_FILE);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    fn counter(&self, prefix: &str, needle: &str) -> Result<u64> {
        Ok(self
            .server_agent
            .scrape()?
            .lines()
            .filter(|l| l.starts_with(prefix) && l.contains(needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum())
    }

    fn denied(&self) -> Result<u64> {
        self.counter(
            "sockmesh_refused_connections_total",
            "reason=\"policy_denied\"",
        )
    }
}

fn policy(name: &str, action: &str, rules: &str, annotations: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  \
         namespace: test2\n{annotations}spec:\n  selector:\n    matchLabels:\n      app: httpbin\n  \
         action: {action}\n{rules}"
    )
}

const ALLOW_SLEEP: &str = "  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/test1/sa/sleep\"]\n";
const FROM_TEST1: &str = "  rules:\n  - from:\n    - source:\n        namespaces: [\"test1\"]\n";

#[test]
fn allow_by_principal_lets_one_client_in_and_resets_the_other() -> Result<()> {
    let yaml = policy("only-sleep", "ALLOW", ALLOW_SLEEP, "");
    let Some(s) = Scenario::start("authz-allow", &yaml)? else {
        return Ok(());
    };
    let reply = s.sleep.connect(s.httpbin.v4(8000), "let me in")?;
    assert_eq!(reply.msg, "let me in");
    let kind = s
        .other
        .connect_fails(s.httpbin.v4(8000), "secret-from-other")?;
    assert!(
        matches!(kind, FailKind::Reset | FailKind::Closed),
        "other: {kind:?}"
    );
    eventually(Duration::from_secs(5), || Ok(s.denied()? >= 1))
        .with_context(|| s.server_agent.scrape().unwrap_or_default())?;
    let log = s.server_agent.access_log()?;
    let refusal = log
        .iter()
        .find(|l| l["reason"] == "policy_denied")
        .with_context(|| format!("no policy_denied line in {log:?}"))?;
    let text = refusal.to_string();
    assert!(text.contains("cluster.local/ns/test1/sa/other"), "{text}");
    assert!(text.contains("ALLOW"), "{text}");
    Ok(())
}

#[test]
fn deny_by_namespace_applies_to_mesh_and_plaintext_arrivals() -> Result<()> {
    let yaml = policy("no-test1", "DENY", FROM_TEST1, "");
    let Some(s) = Scenario::start("authz-deny", &yaml)? else {
        return Ok(());
    };
    // A tunnel stream from a mesh pod in test1: denied.
    s.sleep.connect_fails(s.httpbin.v4(8000), "denied")?;
    // Plaintext from outside the mesh (PERMISSIVE by default): no namespace to match, allowed.
    let reply = s.outside.connect(s.httpbin.v4(8000), "plaintext")?;
    assert_eq!(reply.msg, "plaintext");
    // A DENY for every source catches plaintext too: its arrival path goes through admission.
    s.set_policy(&policy("deny-all", "DENY", "  rules:\n  - {}\n", ""))?;
    eventually(Duration::from_secs(5), || {
        Ok(s.outside
            .connect_timeout(s.httpbin.v4(8000), "x", Duration::from_secs(2))
            .is_err())
    })?;
    eventually(Duration::from_secs(5), || Ok(s.denied()? >= 2))
        .with_context(|| s.server_agent.scrape().unwrap_or_default())
}

#[test]
fn a_policy_applied_during_an_open_connection_closes_it() -> Result<()> {
    let Some(s) = Scenario::start("authz-revoke", "")? else {
        return Ok(());
    };
    let mut cmd = Command::new(testbed::pod_tool()?);
    cmd.args([
        "hold",
        &s.httpbin.v4(8000).to_string(),
        "30",
        "--interval",
        "0.2",
    ]);
    let mut hold = s.sleep.spawn(cmd)?;
    hold.wait_for_log("connected", Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(500));
    s.set_policy(&policy("no-test1", "DENY", FROM_TEST1, ""))?;
    let status = hold
        .wait_timeout(Duration::from_secs(5))?
        .with_context(|| format!("connection still open 5 s after the policy: {}", hold.log()))?;
    ensure!(!status.success(), "hold ended cleanly: {}", hold.log());
    eventually(Duration::from_secs(5), || {
        s.counter(
            "sockmesh_authorization_revoked_connections_total",
            "policy=\"test2/no-test1\"",
        )
        .map(|n| n >= 1)
    })
    .with_context(|| s.server_agent.scrape().unwrap_or_default())
}

#[test]
fn dry_run_counts_what_it_would_deny_without_denying() -> Result<()> {
    let yaml = policy(
        "no-test1",
        "DENY",
        FROM_TEST1,
        "  annotations:\n    istio.io/dry-run: \"true\"\n",
    );
    let Some(s) = Scenario::start("authz-dry", &yaml)? else {
        return Ok(());
    };
    for i in 0..3 {
        let msg = format!("dry {i}");
        assert_eq!(s.sleep.connect(s.httpbin.v4(8000), &msg)?.msg, msg);
    }
    eventually(Duration::from_secs(5), || {
        s.counter(
            "sockmesh_authorization_dry_run_denials_total",
            "policy=\"test2/no-test1\"",
        )
        .map(|n| n >= 3)
    })
    .with_context(|| s.server_agent.scrape().unwrap_or_default())?;
    assert_eq!(s.denied()?, 0);
    Ok(())
}

/// A dedicated mesh mTLS connection, as an Istio sidecar makes one (ALPN `istio`, no tunnel):
/// `openssl s_client` in a pod outside the mesh, with a certificate for `spiffe_id` signed by the
/// mesh CA. The echo's reply, or nothing when the server's proxy refused the connection.
fn sidecar_like_exchange(s: &Scenario, spiffe_id: &str, line: &str) -> Result<String> {
    let ca = s._nodes.0.ca_dir();
    let dir = tempfile::tempdir()?;
    let name = spiffe_id.rsplit('/').next().unwrap_or("peer");
    let (key, csr, cert) = (
        dir.path().join(format!("{name}-key.pem")),
        dir.path().join(format!("{name}.csr")),
        dir.path().join(format!("{name}.pem")),
    );
    let ext = dir.path().join("ext.cnf");
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=URI:{spiffe_id}\nextendedKeyUsage=clientAuth,serverAuth\n\
             keyUsage=digitalSignature,keyEncipherment\n"
        ),
    )?;
    let run = |args: &[&std::ffi::OsStr]| -> Result<()> {
        let out = Command::new("openssl").args(args).output()?;
        ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    run(&[
        &os("req"),
        &os("-nodes"),
        &os("-newkey"),
        &os("ec"),
        &os("-pkeyopt"),
        &os("ec_paramgen_curve:P-256"),
        &os("-keyout"),
        key.as_os_str(),
        &os("-out"),
        csr.as_os_str(),
        &os("-subj"),
        &os("/O=cluster.local"),
    ])?;
    run(&[
        &os("x509"),
        &os("-req"),
        &os("-in"),
        csr.as_os_str(),
        &os("-CA"),
        ca.join("ca-cert.pem").as_os_str(),
        &os("-CAkey"),
        ca.join("ca-key.pem").as_os_str(),
        &os("-CAcreateserial"),
        &os("-CAserial"),
        dir.path().join("serial").as_os_str(),
        &os("-days"),
        &os("1"),
        &os("-out"),
        cert.as_os_str(),
        &os("-extfile"),
        ext.as_os_str(),
    ])?;
    let script = format!(
        "(echo {line}; sleep 1) | timeout 6 openssl s_client -quiet -no_ign_eof -connect {} -alpn istio \
         -cert {} -key {} 2>/dev/null",
        s.httpbin.v4(8000),
        cert.display(),
        key.display()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &script]);
    let out = s.outside.run_timeout(cmd, Duration::from_secs(15))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn dedicated_mesh_mtls_from_a_sidecar_like_client_goes_through_admission() -> Result<()> {
    let yaml = policy("only-sleep", "ALLOW", ALLOW_SLEEP, "");
    let Some(s) = Scenario::start("authz-dedicated", &yaml)? else {
        return Ok(());
    };
    let allowed = sidecar_like_exchange(
        &s,
        "spiffe://cluster.local/ns/test1/sa/sleep",
        "dedicated-allowed",
    )?;
    assert!(
        allowed.contains("dedicated-allowed"),
        "allowed peer got: {allowed:?}"
    );
    let denied = sidecar_like_exchange(
        &s,
        "spiffe://cluster.local/ns/test1/sa/other",
        "dedicated-denied",
    )?;
    assert!(
        !denied.contains("dedicated-denied"),
        "denied peer got: {denied:?}"
    );
    eventually(Duration::from_secs(5), || {
        Ok(s.server_agent.access_log()?.iter().any(|l| {
            l["reason"] == "policy_denied"
                && l.to_string().contains("cluster.local/ns/test1/sa/other")
        }))
    })
    .with_context(|| format!("{:?}", s.server_agent.access_log()))
}
