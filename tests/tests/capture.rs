//! End-to-end tests of the capture path: real programs on real cgroups, real sockets between real
//! network namespaces, a real `sockmesh run` per node. Plaintext (no PeerAuthentication or
//! DestinationRule in these configs, and the servers' namespace is outside the mesh where TLS would
//! otherwise be used).
use std::{net::SocketAddr, time::Duration};

use anyhow::Result;
use testbed::{Agent, FailKind, Node, Pod, TestBed, bpf};

const CAPTURE: (&str, &str) = ("sockmesh.io/capture", "enabled");

fn mesh(bed: &TestBed, namespace: &str) {
    bed.label_namespace(namespace, CAPTURE.0, CAPTURE.1);
}

/// The agent logged a captured outbound connection of `pod` towards `dst`, with its cgroup id.
fn captured_outbound(agent: &mut Agent, pod: &Pod, dst: SocketAddr) -> Result<()> {
    let needle = format!("orig_dst={dst} cgroup_id={}", pod.cgroup_id());
    agent.wait_for_log(&needle, Duration::from_secs(5))
}

fn start(node: &Node, bed: &TestBed) -> Result<Agent> {
    Agent::start(node, &bed.write_config()?)
}

#[test]
fn outbound_v4_v6_and_v4_mapped_are_redirected_with_original_destination() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let bed = TestBed::new("cap-out")?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    mesh(&bed, "test1");
    let sleep = n1.pod("test1", "sleep")?;
    let server = n2.pod("test3", "httpbin")?;
    let _srv = server.serve_echo(8000)?;
    let mut agent = start(&n1, &bed)?;

    for dst in [server.v4(8000), server.v6(8000), server.v4_mapped(8000)] {
        let reply = sleep.connect(dst, "hello")?;
        assert_eq!(reply.msg, "hello");
        // The proxy's upstream leaves from inside the pod: the server sees the pod's own address.
        let expect_peer: std::net::IpAddr = if dst == server.v6(8000) {
            sleep.ipv6().into()
        } else {
            sleep.ipv4().into()
        };
        assert_eq!(reply.peer.ip(), expect_peer, "peer for {dst}");
        // A v4-mapped destination is recorded as the IPv4 address it stands for.
        let recorded = if dst == server.v4_mapped(8000) {
            server.v4(8000)
        } else {
            dst
        };
        captured_outbound(&mut agent, &sleep, recorded)?;
    }
    let v4_needle = format!(
        "orig_dst={} cgroup_id={}",
        server.v4(8000),
        sleep.cgroup_id()
    );
    assert_eq!(
        agent.log().matches(&v4_needle).count(),
        2,
        "IPv4 and v4-mapped connects both captured"
    );
    assert!(
        bpf::stat(n1.pin_dir(), 0)? >= 3,
        "connect_redirected counter"
    );
    Ok(())
}

#[test]
fn pods_outside_the_mesh_and_loopback_are_untouched() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let bed = TestBed::new("cap-skip")?;
    let n1 = bed.node("n1")?;
    mesh(&bed, "test1");
    let sleep = n1.pod("test1", "sleep")?;
    let outsider = n1.pod("test3", "sleep")?;
    let server = n1.pod("test3", "httpbin")?;
    let _srv = server.serve_echo(8000)?;
    let _local = sleep.serve_echo(7000)?;
    let agent = start(&n1, &bed)?;

    let reply = outsider.connect(server.v4(8000), "direct")?;
    assert_eq!(reply.peer.ip(), std::net::IpAddr::from(outsider.ipv4()));
    let reply = sleep.connect("127.0.0.1:7000", "loop")?;
    assert_eq!(reply.peer.ip().to_string(), "127.0.0.1");
    let log = agent.log();
    assert!(
        !log.contains(&format!("cgroup_id={} ", outsider.cgroup_id())),
        "outsider captured:\n{log}"
    );
    assert!(
        !log.contains("orig_dst=127.0.0.1:7000"),
        "loopback captured:\n{log}"
    );
    Ok(())
}

#[test]
fn inbound_is_steered_on_any_port_with_the_original_destination() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let bed = TestBed::new("cap-in")?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    mesh(&bed, "test1");
    let client = n1.pod("test3", "sleep")?;
    let server = n2.pod("test1", "httpbin")?;
    let _a = server.serve_echo(8000)?;
    let _b = server.serve_echo(9999)?;
    let mut agent = start(&n2, &bed)?;

    for dst in [server.v4(8000), server.v4(9999), server.v6(9999)] {
        let reply = client.connect(dst, "in")?;
        assert_eq!(reply.local, dst, "original destination preserved");
        // The proxy connects to the app from inside the pod, with the pod's address.
        assert_eq!(reply.peer.ip(), dst.ip(), "served through the proxy");
        agent.wait_for_log(&format!(" dst={dst}\n"), Duration::from_secs(5))?;
    }
    assert!(bpf::stat(n2.pin_dir(), 4)? >= 3, "lookup_steered counter");
    Ok(())
}

#[test]
fn a_container_started_after_enrollment_is_captured_from_its_first_connect() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let bed = TestBed::new("cap-late")?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    mesh(&bed, "test1");
    let sleep = n1.pod("test1", "sleep")?;
    let server = n2.pod("test3", "httpbin")?;
    let _srv = server.serve_echo(8000)?;
    let mut agent = start(&n1, &bed)?;
    let needle = "outbound captured pod=test1/sleep client=";
    let before = agent.log().matches(needle).count();

    // A new container cgroup, and at once a process in it connecting: no time for the agent to
    // notice the cgroup. connect4 finds the enrolled pod cgroup among the caller's ancestors.
    let late = sleep.add_container("late")?;
    let mut connect = std::process::Command::new(testbed::pod_tool()?);
    connect.args(["connect", &server.v4(8000).to_string(), "first"]);
    let out = late.run(connect)?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.wait_for_log(
        &format!("orig_dst={}", server.v4(8000)),
        Duration::from_secs(5),
    )?;
    assert_eq!(
        agent.log().matches(&needle).count(),
        before + 1,
        "first connect captured"
    );
    Ok(())
}

#[test]
fn unenrolling_a_pod_restores_direct_traffic() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let bed = TestBed::new("cap-unenroll")?;
    let n1 = bed.node("n1")?;
    mesh(&bed, "test1");
    let sleep = n1.pod("test1", "sleep")?;
    let server = n1.pod("test3", "httpbin")?;
    let _srv = server.serve_echo(8000)?;
    let config = bed.write_config()?;
    let mut agent = Agent::start(&n1, &config)?;
    sleep.connect(server.v4(8000), "before")?;
    captured_outbound(&mut agent, &sleep, server.v4(8000))?;

    std::fs::remove_file(config.join(sleep.yaml_file_name()))?;
    agent.wait_for_log("pod unenrolled", Duration::from_secs(5))?;
    let before = bpf::stat(n1.pin_dir(), 0)?;
    let reply = sleep.connect(server.v4(8000), "after")?;
    assert_eq!(reply.msg, "after");
    assert_eq!(
        bpf::stat(n1.pin_dir(), 0)?,
        before,
        "no redirect after unenroll"
    );
    assert!(bpf::map_dump(n1.pin_dir(), "WORKLOADS")?.is_empty());
    assert!(bpf::map_dump(n1.pin_dir(), "POD_ADDRS")?.is_empty());
    Ok(())
}

#[test]
fn restart_keeps_pinned_capture_fails_closed_while_down_and_never_double_attaches() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let bed = TestBed::new("cap-restart")?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    mesh(&bed, "test1");
    let sleep = n1.pod("test1", "sleep")?;
    let server = n1.pod("test1", "httpbin")?;
    let outsider = n2.pod("test3", "sleep")?;
    let target = n2.pod("test3", "httpbin")?;
    let _srv = server.serve_echo(8000)?;
    let _tgt = target.serve_echo(8000)?;
    let config = bed.write_config()?;
    let agent = Agent::start(&n1, &config)?;
    sleep.connect(target.v4(8000), "up")?;
    agent.kill()?;
    std::thread::sleep(Duration::from_millis(300));

    let names =
        |progs: Vec<(String, String)>| progs.into_iter().map(|(_, n)| n).collect::<Vec<_>>();
    let mut attached = names(bpf::cgroup_programs(n1.cgroup().path())?);
    attached.sort();
    assert_eq!(attached, ["connect4", "connect6"], "capture stays pinned");
    let pod_programs = names(bpf::cgroup_programs(sleep.cgroup_path())?);
    assert_eq!(
        pod_programs,
        ["sock_ops_cb"],
        "sock_ops stays pinned on the pod"
    );

    // Outbound fails closed: the redirect stays, the listener is gone.
    assert_eq!(
        sleep.connect_fails(target.v4(8000), "down")?,
        FailKind::Refused
    );
    // Inbound is dropped (SYN retransmitted later), never delivered unenforced.
    let kind = outsider.connect_timeout(server.v4(8000), "down", Duration::from_millis(1500));
    assert!(
        kind.is_err(),
        "inbound must not reach the app while the proxy is down"
    );
    assert!(
        bpf::stat(n1.pin_dir(), 5)? >= 1,
        "lookup_dropped_no_proxy counter"
    );

    let _agent = Agent::start(&n1, &config)?;
    let mut attached = names(bpf::cgroup_programs(n1.cgroup().path())?);
    attached.sort();
    assert_eq!(
        attached,
        ["connect4", "connect6"],
        "exactly one of each after restart"
    );
    let pod_programs = names(bpf::cgroup_programs(sleep.cgroup_path())?);
    assert_eq!(
        pod_programs,
        ["sock_ops_cb"],
        "one sock_ops link per pod after restart"
    );
    sleep.connect(target.v4(8000), "again")?;
    outsider.connect(server.v4(8000), "again")?;
    Ok(())
}

#[test]
fn a_thousand_concurrent_connections_leak_no_map_entries_or_fds() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let bed = TestBed::new("cap-load")?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    mesh(&bed, "test1");
    let sleep = n1.pod("test1", "sleep")?;
    let server = n2.pod("test3", "httpbin")?;
    let _srv = server.serve_echo(8000)?;
    let agent = start(&n1, &bed)?;
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", agent.pid())).map(|d| d.count());
    let baseline = fds()?;

    let report = sleep.connect_many(server.v4(8000), 1000)?;
    assert_eq!(report.ok, 1000, "failures: {:?}", report.failed);

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let conns = bpf::map_dump(n1.pin_dir(), "CONNS")?.len();
        let pending = bpf::map_dump(n1.pin_dir(), "PENDING")?.len();
        let open = fds()?;
        if conns == 0 && pending == 0 && open <= baseline {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leak: CONNS={conns} PENDING={pending} fds={open} (baseline {baseline})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
