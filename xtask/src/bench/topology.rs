//! The benchmark's world: two nodes of one test bed, a client pod on n1 and a server pod on n2
//! (nginx with a 100-byte page, iperf3 -s), both in a mesh-labelled namespace so that an agent,
//! while one runs, captures them; with no agent running the same pods talk directly.
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use testbed::{Node, Pod, Process, TestBed};

/// Kubernetes namespace of the two pods.
pub const NAMESPACE: &str = "bench";
/// Per-netns settings of the perf notes: enough ephemeral ports and backlog for wrk's new
/// connections, and the proxy and iperf3 ports kept out of the ephemeral range.
const POD_SYSCTLS: &[&str] = &[
    "net.ipv4.ip_local_port_range=1024 65000",
    "net.core.somaxconn=4096",
    "net.ipv4.tcp_tw_reuse=1",
    "net.ipv4.ip_local_reserved_ports=5201,15000-15100",
];

/// nginx as in the perf notes; `{dir}` is replaced by the bed's nginx directory.
const NGINX_CONF: &str = "daemon off;
worker_processes 2;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 10000000;
    server {
        listen 80 backlog=4096;
        root {dir}/www;
    }
}
";

/// Stops a server gracefully when dropped: nginx's workers only leave with their master's
/// SIGTERM, not with a SIGKILL of it.
struct Server(Option<Process>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(process) = self.0.take() {
            let _ = process.stop(Duration::from_secs(5));
        }
    }
}

/// The bed and everything running in it for the whole benchmark. Field order is drop order:
/// servers first, then the bed (which removes pods, nodes and leftovers).
pub struct Topology {
    _servers: Vec<Server>,
    pub client: Pod,
    pub server: Pod,
    pub nodes: [Node; 2],
    pub bed: TestBed,
}

impl Topology {
    pub fn build() -> Result<Topology> {
        let bed = TestBed::new("bench")?;
        let nodes = [bed.node("n1")?, bed.node("n2")?];
        let client = nodes[0].pod(NAMESPACE, "client")?;
        let server = nodes[1].pod(NAMESPACE, "server")?;
        bed.label_namespace(NAMESPACE, "sockmesh.io/capture", "enabled");
        bed.write_config()?;
        for pod in [&client, &server] {
            let mut cmd = Command::new("sysctl");
            cmd.arg("-q").arg("-w").args(POD_SYSCTLS);
            check(pod.run(cmd)?, "sysctl")?;
        }
        let servers = vec![
            Server(Some(start_nginx(&bed, &server)?)),
            Server(Some(start_iperf3(&server)?)),
        ];
        let topology = Topology {
            _servers: servers,
            client,
            server,
            nodes,
            bed,
        };
        let url = format!("http://{}/", topology.server.v4(80));
        wait_http(&topology.client, &url, Duration::from_secs(10))?;
        Ok(topology)
    }

    pub fn config_dir(&self) -> PathBuf {
        self.bed.config_dir()
    }
}

fn start_nginx(bed: &TestBed, server: &Pod) -> Result<Process> {
    let dir = bed.workdir().join("nginx");
    fs::create_dir_all(dir.join("www"))?;
    // 99 characters and a newline: the 100-byte body of the perf notes.
    fs::write(dir.join("www/index.html"), format!("{}\n", "x".repeat(99)))?;
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        NGINX_CONF.replace("{dir}", &dir.display().to_string()),
    )?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&conf).arg("-p").arg(&dir);
    server.spawn(cmd)
}

fn start_iperf3(server: &Pod) -> Result<Process> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-s", "--forceflush"]);
    let mut process = server.spawn(cmd)?;
    process.wait_for_log("Server listening", Duration::from_secs(10))?;
    Ok(process)
}

/// Retries one `curl` from `pod` until `url` answers: the readiness check of a server or proxy
/// pair, and the one warm-up request per block of the perf notes.
pub fn wait_http(pod: &Pod, url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut cmd = Command::new("curl");
        cmd.args(["-sf", "-o", "/dev/null", "--max-time", "2", url]);
        let output = pod.run(cmd)?;
        if output.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{url} does not answer from pod {}: {}",
                pod.name(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn check(output: std::process::Output, what: &str) -> Result<()> {
    if !output.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
