//! meshConfig from Istio's `istio` ConfigMap with the agents in `--kubernetes` mode: its values
//! apply (a trust domain in the certificates, a root namespace whose PeerAuthentication is
//! mesh-wide), a flag overrides it, `sockmesh status` says where each value came from, and a change
//! of the root namespace applies live while a changed trust domain waits for a restart.
use std::{process::Command, time::Duration};

use anyhow::{Context, Result};
use serde_json::Value;
use testbed::{Agent, TestBed, eventually};

const PROPAGATION: Duration = Duration::from_secs(20);

fn configmap(mesh: &str) -> String {
    let indented: String = mesh.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\n\
         data:\n  mesh: |\n{indented}"
    )
}

#[test]
fn mesh_config_comes_from_the_configmap_unless_a_flag_says_otherwise() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"));
    let bed = TestBed::kubernetes("mesh-config")?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    bed.label_namespace("test1", "istio-injection", "enabled");
    let sleep = n1.pod("test1", "sleep")?;
    let outsider = n1.pod("test3", "sleep")?;
    let httpbin = n2.pod("test1", "httpbin")?;
    let _server = httpbin.serve_echo(8000)?;
    // STRICT in `mesh-root`: mesh-wide only while that is the root namespace.
    std::fs::write(
        bed.config_dir().join("mesh.yaml"),
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  \
             namespace: mesh-root\nspec:\n  mtls:\n    mode: STRICT\n---\n{}",
            configmap("trustDomain: corp.example\nrootNamespace: mesh-root\nenableAutoMtls: false")
        ),
    )?;
    let api = bed.api()?;
    api.install_istio_crds();
    bed.publish()?;
    let flags = ["--auto-mtls", "true"];
    let agents = [
        Agent::start_kubernetes(&n1, &flags)?,
        Agent::start_kubernetes(&n2, &flags)?,
    ];
    let mesh = |agent: &Agent| -> Result<Value> {
        Ok(serde_json::from_str(&agent.admin_get("/mesh_config")?)?)
    };
    let m = mesh(&agents[0])?;
    assert_eq!(
        m["trust_domain"],
        serde_json::json!({"value": "corp.example", "source": "configmap"})
    );
    assert_eq!(
        m["root_namespace"],
        serde_json::json!({"value": "mesh-root", "source": "configmap"})
    );
    assert_eq!(
        m["auto_mtls"],
        serde_json::json!({"value": true, "source": "flag"}),
        "the flag wins"
    );

    let target = httpbin.v4(8000);
    sleep
        .connect(target, "mesh")
        .context("mesh mTLS with corp.example identities")?;
    outsider
        .connect_fails(target, "plaintext")
        .context("STRICT from the ConfigMap's root namespace")?;
    let certs = agents[1].admin_get("/certs")?;
    assert!(
        certs.contains("spiffe://corp.example/ns/test1/sa/"),
        "{certs}"
    );

    let out = Command::new(testbed::sockmesh_bin()?)
        .args(["status", "--admin", &agents[0].admin_addr().to_string()])
        .output()?;
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{status}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "trust domain    corp.example  configmap istio-system/istio",
        "root namespace  mesh-root     configmap istio-system/istio",
        "auto mTLS       true          flag",
    ] {
        assert!(status.contains(line), "{line:?} in:\n{status}");
    }

    // Live: the root namespace moves (its STRICT no longer applies); the trust domain waits.
    api.apply(&configmap(
        "trustDomain: new.example\nrootNamespace: istio-system",
    ))?;
    eventually(PROPAGATION, || {
        Ok(outsider.connect(target, "permissive").is_ok())
    })
    .context("the new root namespace applied without a restart")?;
    let m = mesh(&agents[0])?;
    assert_eq!(
        m["root_namespace"],
        serde_json::json!({"value": "istio-system", "source": "configmap"})
    );
    assert_eq!(m["trust_domain"]["value"], "corp.example");
    assert_eq!(m["trust_domain_after_restart"], "new.example");
    sleep
        .connect(target, "still mesh")
        .context("identities unchanged until a restart")?;
    Ok(())
}
