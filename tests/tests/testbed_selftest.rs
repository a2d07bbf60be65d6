//! The test bed tested on itself: topology, placement of processes, capture and cleanup.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use testbed::{FailKind, PodOptions, TestBed, cgroup_of};

/// Root check and pod-tool location, first thing in every test.
fn setup() -> bool {
    testbed::set_pod_tool(env!("CARGO_BIN_EXE_pod-tool"));
    testbed::require_root()
}

/// Identity (device, inode) of a process's network namespace.
fn netns_of(pid: u32) -> Result<(u64, u64)> {
    let m = fs::metadata(format!("/proc/{pid}/ns/net"))?;
    Ok((m.dev(), m.ino()))
}

#[test]
fn pods_on_two_nodes_talk_over_v4_and_v6_across_the_wire() -> Result<()> {
    if !setup() {
        return Ok(());
    }
    let bed = TestBed::new("connectivity")?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    let sleep = n1.pod("test1", "sleep")?;
    let httpbin = n2.pod("test2", "httpbin")?;
    let _srv = httpbin.serve_echo(8000)?;
    let wire = bed.wire_capture()?;

    let v4 = sleep.connect(httpbin.v4(8000), "hello-v4")?;
    assert_eq!(v4.server, "test2/httpbin");
    assert_eq!(v4.peer.ip(), sleep.ipv4());
    assert_eq!(v4.local, httpbin.v4(8000));
    assert_eq!(v4.msg, "hello-v4");

    let v6 = sleep.connect(httpbin.v6(8000), "hello-v6")?;
    assert_eq!(v6.peer.ip(), sleep.ipv6());
    assert_eq!(v6.local, httpbin.v6(8000));

    // An IPv6 socket to a v4-mapped address is IPv4 on the wire.
    let mapped = sleep.connect(httpbin.v4_mapped(8000), "hello-mapped")?;
    assert_eq!(mapped.local, httpbin.v4(8000));

    assert_eq!(
        sleep.connect_fails(httpbin.v4(8001), "nobody")?,
        FailKind::Refused
    );

    let wire = wire.finish()?;
    assert_eq!(wire.dropped(), 0);
    assert!(wire.contains(b"hello-v4") && wire.contains(b"hello-v6"));
    assert!(wire.contains(b"hello-mapped"));
    let flows = wire.flows();
    let flow = flows
        .iter()
        .find(|f| f.server == httpbin.v6(8000))
        .expect("v6 flow on the wire");
    assert_eq!(flow.client.ip(), sleep.ipv6());
    assert_eq!(flow.to_server, b"hello-v6\n");
    assert!(!flow.is_tls());
    assert!(flow.to_client.starts_with(b"{"));
    wire.write_pcap(&bed.workdir().join("wire.pcap"))?;
    Ok(())
}

#[test]
fn processes_run_in_their_pod_cgroup_and_netns() -> Result<()> {
    if !setup() {
        return Ok(());
    }
    let bed = TestBed::new("placement")?;
    let node = bed.node("n1")?;
    let pod = node.pod("test1", "sleep")?;
    let sleeper = pod.spawn(sleep_cmd())?;
    assert_eq!(cgroup_of(sleeper.pid())?, pod.main().cgroup().rel());
    assert_eq!(
        fs::metadata(pod.main().cgroup().path())?.ino(),
        pod.cgroup_id()
    );
    assert!(pod.main().cgroup().rel().starts_with(pod.cgroup_rel()));
    assert!(pod.cgroup_rel().starts_with(node.cgroup().rel()));
    let ns = fs::metadata(pod.netns_path())?;
    assert_eq!(netns_of(sleeper.pid())?, (ns.dev(), ns.ino()));

    let c2 = pod.add_container("c2")?;
    let second = c2.spawn(sleep_cmd())?;
    assert_eq!(cgroup_of(second.pid())?, format!("{}/c2", pod.cgroup_rel()));
    assert_eq!(netns_of(second.pid())?, (ns.dev(), ns.ino()));
    assert_eq!(pod.cgroup_ids(), vec![pod.cgroup_id(), c2.cgroup().id()]);

    // The agent: under the node's attach point, not in a pod, in the root netns.
    let agent = node.spawn_agent(sleep_cmd())?;
    assert_eq!(cgroup_of(agent.pid())?, node.agent_cgroup().rel());
    assert_eq!(netns_of(agent.pid())?, netns_of(std::process::id())?);

    // `run` sees the pod's interfaces and no others.
    let out = pod.run(ip_cmd(&["-o", "addr", "show", "dev", "eth0"]))?;
    let text = String::from_utf8(out.stdout)?;
    assert!(text.contains(&pod.ipv4().to_string()) && text.contains(&pod.ipv6().to_string()));
    Ok(())
}

#[test]
fn dropping_the_bed_leaves_nothing_behind() -> Result<()> {
    if !setup() {
        return Ok(());
    }
    let root_links = links_in_root_netns()?;
    let mut paths: Vec<PathBuf> = Vec::new();
    {
        let bed = TestBed::new("cleanup")?;
        let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
        let a = n1.pod("test1", "a")?;
        let b = n2.pod("test1", "b")?;
        b.add_container("sidecar")?;
        let _srv = b.serve_echo(9000)?;
        // A process the bed must kill itself: the handle outlives the bed.
        let leaked = a.spawn(sleep_cmd())?;
        a.connect(b.v4(9000), "x")?;
        paths.extend([bed.cgroup().path().to_owned(), bed.workdir().to_owned()]);
        paths.extend([
            bed.fabric_netns_path().to_owned(),
            n1.netns_path().to_owned(),
        ]);
        paths.extend([a.netns_path().to_owned(), b.netns_path().to_owned()]);
        // What an agent pins must go too.
        fs::create_dir_all(n2.pin_dir().join("maps"))?;
        paths.push(n2.pin_dir().to_owned());
        bed.write_config()?;
        drop(bed);
        assert!(
            fs::metadata(format!("/proc/{}/cgroup", leaked.pid())).is_err()
                || is_zombie(leaked.pid())
        );
    }
    for p in &paths {
        assert!(!p.exists(), "{} still exists", p.display());
    }
    assert_eq!(links_in_root_netns()?, root_links);
    Ok(())
}

#[test]
fn config_directory_describes_pods_for_the_agent() -> Result<()> {
    if !setup() {
        return Ok(());
    }
    let bed = TestBed::new("config")?;
    let n1 = bed.node("n1")?;
    let opts = PodOptions::new()
        .label("version", "v1")
        .service_account("sleeper");
    let pod = n1.pod_with("test1", "sleep", opts)?;
    bed.label_namespace("test1", "istio-injection", "enabled");
    let dir = bed.write_config()?;
    let yaml = fs::read_to_string(dir.join(pod.yaml_file_name()))?;
    for needle in [
        "kind: Pod".to_owned(),
        "nodeName: \"n1\"".to_owned(),
        "serviceAccountName: \"sleeper\"".to_owned(),
        "\"version\": \"v1\"".to_owned(),
        format!("\"sockmesh.io/cgroup\": \"{}\"", pod.cgroup_rel()),
        format!("\"sockmesh.io/netns\": \"{}\"", pod.netns_path().display()),
        format!("podIP: \"{}\"", pod.ipv4()),
        format!("- ip: \"{}\"", pod.ipv6()),
        "- name: \"main\"".to_owned(),
    ] {
        assert!(yaml.contains(&needle), "{needle} missing in:\n{yaml}");
    }
    let ns = fs::read_to_string(dir.join("namespace-test1.yaml"))?;
    assert!(
        ns.contains("kind: Namespace") && ns.contains("\"istio-injection\": \"enabled\""),
        "{ns}"
    );
    Ok(())
}

#[test]
fn many_concurrent_connections_and_parallel_beds() -> Result<()> {
    if !setup() {
        return Ok(());
    }
    let first = TestBed::new("many-a")?;
    let second = TestBed::new("many-b")?;
    let a = first.node("n1")?.pod("test1", "client")?;
    let b = first.node("n2")?.pod("test1", "server")?;
    let other = second.node("n1")?.pod("test1", "client")?;
    assert_ne!(
        a.ipv4(),
        other.ipv4(),
        "parallel beds must not share addresses"
    );
    let ports = [
        first.nodes()[0].local_port(0)?,
        second.nodes()[0].local_port(0)?,
    ];
    assert_ne!(ports[0], ports[1], "nor agent ports");
    let _srv = b.serve_echo(8080)?;
    let report = a.connect_many(b.v4(8080), 300)?;
    assert_eq!((report.ok, report.failed.len()), (300, 0), "{report:?}");
    // Beds are isolated from each other.
    assert_eq!(other.connect_fails(b.v4(8080), "x")?, FailKind::Unreachable);
    Ok(())
}

#[test]
fn sweep_removes_leftovers_of_dead_runs_only() -> Result<()> {
    if !setup() {
        return Ok(());
    }
    let mut child = Command::new("true").spawn()?;
    let dead = child.id();
    child.wait()?;
    let name = format!("smt-{dead}-0-crashed");
    let cgroup = testbed::cgroup2_mount()?.join(&name);
    fs::create_dir(&cgroup)?;
    fs::create_dir(cgroup.join("n1"))?;
    assert!(
        Command::new("ip")
            .args(["netns", "add", &name])
            .status()?
            .success()
    );
    let live = TestBed::new("alive")?;
    // TestBed::new swept already; sweeping again must spare the live bed.
    testbed::sweep_stale()?;
    assert!(!cgroup.exists());
    assert!(!PathBuf::from("/run/netns").join(&name).exists());
    assert!(live.cgroup().path().exists() && live.fabric_netns_path().exists());
    Ok(())
}

fn sleep_cmd() -> Command {
    let mut cmd = Command::new(testbed::pod_tool().expect("pod-tool"));
    cmd.arg("sleep");
    cmd
}

fn ip_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    cmd
}

fn links_in_root_netns() -> Result<Vec<String>> {
    let out = Command::new("ip").args(["-o", "link", "show"]).output()?;
    let mut names: Vec<String> = String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

fn is_zombie(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .is_some_and(|rest| rest.trim_start().starts_with('Z'))
}

#[test]
fn process_logs_and_timeouts() -> Result<()> {
    if !setup() {
        return Ok(());
    }
    let bed = TestBed::new("process")?;
    let pod = bed.node("n1")?.pod("test1", "p")?;
    let mut sh = Command::new("sh");
    sh.args(["-c", "echo ready; exec sleep 30"]);
    let mut proc = pod.spawn(sh)?;
    proc.wait_for_log("ready", Duration::from_secs(5))?;
    assert!(proc.wait_timeout(Duration::from_millis(50))?.is_none());
    let status = proc.stop(Duration::from_secs(1))?;
    assert!(!status.success());
    Ok(())
}
