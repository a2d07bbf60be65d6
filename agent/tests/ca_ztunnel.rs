//! Istio's own ztunnel (built from its source, `../shared/ztunnel/`) obtains its workload
//! certificate from `sockmesh ca` with its real CA client (`CA_ADDRESS`, `CA_ROOT_CA`,
//! `AUTH_TOKEN`, no `FAKE_CA`), and a ztunnel asking for an identity its token does not grant gets
//! nothing. ztunnel and the CA run in a network namespace of their own (ztunnel binds fixed
//! ports); TokenReview and pod lookups are answered by the test bed's API server (the stand-in
//! for kube-apiserver, which cannot run here), served inside that namespace.
mod ca_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ca_support::{CaProcess, bound};
use sockmesh_agent::identity::MeshCa;

fn ztunnel_binary() -> Option<PathBuf> {
    let path = std::env::var_os("ZTUNNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/ztunnel/ztunnel")
        });
    path.exists().then_some(path)
}

/// A network namespace with loopback up and `ip` on it; deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str, ip: &str) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        run(&["ip", "netns", "add", name]);
        let ns = Netns(name.to_string());
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "-n",
            name,
            "addr",
            "add",
            &format!("{ip}/32"),
            "dev",
            "lo",
        ]);
        ns
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?}: {status}");
}

/// A ztunnel process in dedicated mode for `workload` (`ns/pod/sa`); killed on drop.
struct Ztunnel {
    child: Child,
    log: PathBuf,
}

impl Ztunnel {
    fn start(
        netns: &Netns,
        work: &Path,
        ca: &CaProcess,
        root: &Path,
        token: &str,
        workload: &str,
    ) -> Ztunnel {
        let [ns, pod, sa] = workload.split('/').collect::<Vec<_>>().try_into().unwrap();
        let dir = work.join(format!("zt-{pod}-{sa}"));
        std::fs::create_dir_all(&dir).unwrap();
        let token_file = dir.join("istio-token");
        std::fs::write(&token_file, token).unwrap();
        let workloads = dir.join("workloads.yaml");
        std::fs::write(
            &workloads,
            format!(
                "workloads:\n- uid: cluster1//v1/Pod/{ns}/{pod}\n  name: {pod}\n  namespace: {ns}\n  \
                 serviceAccount: {sa}\n  trustDomain: cluster.local\n  workloadIps: [\"10.231.9.2\"]\n  \
                 protocol: HBONE\n  node: node-a\n  services: {{}}\n"
            ),
        )
        .unwrap();
        let log = dir.join("ztunnel.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &netns.0])
            .arg(ztunnel_binary().unwrap())
            .arg("proxy")
            .current_dir(&dir)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CA_ADDRESS", format!("https://{}", ca.addr))
            .env("CA_ROOT_CA", root)
            .env("AUTH_TOKEN", &token_file)
            .env("XDS_ADDRESS", "")
            .env("LOCAL_XDS_PATH", &workloads)
            .env("PROXY_MODE", "dedicated")
            .env("PROXY_WORKLOAD_INFO", workload)
            .env("ENABLE_ORIG_SRC", "false")
            .env("PACKET_MARK", "1337")
            .env("ZTUNNEL_WORKER_THREADS", "1")
            .env("ISTIO_META_DNS_CAPTURE", "false")
            .env("IPV6_ENABLED", "false")
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Ztunnel { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Ztunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on ztunnel's admin port inside `netns`.
fn admin_get(netns: &Netns, path: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", &netns.0, "curl", "-sf", "--max-time", "2"])
        .arg(format!("http://127.0.0.1:15000{path}"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// ztunnel fetches a workload certificate when it needs one: a TLS handshake on the workload's
/// HBONE port (15008) makes it ask the CA.
fn poke_hbone(netns: &Netns) {
    let _ = Command::new("ip")
        .args(["netns", "exec", &netns.0, "curl", "-sk", "--max-time", "2"])
        .arg("https://10.231.9.2:15008/")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn wait_until(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ztunnel_obtains_its_certificate_from_sockmesh_ca_and_nothing_else() {
    let Some(_) = ztunnel_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no ztunnel binary (../shared/ztunnel/ztunnel or $ZTUNNEL), and CI must run this test"
        );
        eprintln!("skipping: no ztunnel binary (../shared/ztunnel/ztunnel or $ZTUNNEL)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let netns = Netns::new(&format!("smca-zt-{}", std::process::id()), "10.231.9.2");
    let ca_dir = work.path().join("cacerts");
    MeshCa::load_or_create(&ca_dir, "cluster.local").unwrap();
    let api = ca_support::api(
        work.path(),
        Some(&netns.path()),
        vec![("amb", "client", "client", "node-a")],
    );
    let ca = CaProcess::start(&ca_dir, &api, work.path(), Some(&netns.0), &[]);
    let root = ca_dir.join("root-cert.pem");
    let token = api.issue_token(bound("amb", "client", "client", "node-a"));

    let ztunnel = Ztunnel::start(&netns, work.path(), &ca, &root, &token, "amb/client/client");
    let identity = "spiffe://cluster.local/ns/amb/sa/client";
    wait_until(
        Duration::from_secs(30),
        "ztunnel holds a certificate from sockmesh ca",
        || {
            poke_hbone(&netns);
            admin_get(&netns, "/config_dump").is_some_and(|dump| {
                let dump: serde_json::Value = serde_json::from_str(&dump).unwrap_or_default();
                dump["certificates"].as_array().is_some_and(|certs| {
                    certs
                        .iter()
                        .any(|c| c["identity"] == identity && c["state"] == "Available")
                })
            })
        },
        || format!("{}\nCA:\n{}", ztunnel.log(), ca.log()),
    );
    assert_eq!(
        ca.metric("sockmesh_ca_certificates_issued_total"),
        Some(1.0)
    );
    assert!(ca.log().contains("certificate issued"), "{}", ca.log());
    drop(ztunnel.stop());

    // The same token, but ztunnel asks for another service account's identity.
    let impostor = Ztunnel::start(&netns, work.path(), &ca, &root, &token, "amb/client/admin");
    wait_until(
        Duration::from_secs(30),
        "the CA refuses ztunnel's request for amb/admin",
        || {
            poke_hbone(&netns);
            ca.metric("sockmesh_ca_refusals_total{reason=\"csr_identity_mismatch\"}")
                .is_some()
        },
        || format!("{}\nCA:\n{}", impostor.log(), ca.log()),
    );
    let log = impostor.stop();
    assert_eq!(
        ca.metric("sockmesh_ca_certificates_issued_total"),
        Some(1.0),
        "{log}"
    );
}
