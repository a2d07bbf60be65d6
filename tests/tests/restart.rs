//! Rolling update under load: a new agent starts beside the old one, takes over the pinned
//! programs and the pods' listeners, and the old one drains and exits, while a client opens new
//! connections without pause. Counts refused and escaped connections (target: zero of each).
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Result;
use testbed::{Agent, TestBed};

const CAPTURE: (&str, &str) = ("sockmesh.io/capture", "enabled");
const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: test2\nspec:\n  mtls:\n    mode: STRICT\n";

#[test]
fn rolling_restart_of_both_agents_refuses_and_leaks_nothing() -> Result<()> {
    if !testbed::require_root() {
        return Ok(());
    }
    let bed = TestBed::new("restart")?;
    let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
    bed.label_namespace("test1", CAPTURE.0, CAPTURE.1);
    bed.label_namespace("test2", CAPTURE.0, CAPTURE.1);
    let sleep = n1.pod("test1", "sleep")?;
    let httpbin = n2.pod("test2", "httpbin")?;
    let _srv = httpbin.serve_echo(8000)?;
    let config = bed.write_config()?;
    // STRICT on the server: a connection that escaped capture on either side would arrive as
    // plaintext (or reach the app directly) and be refused or seen with the client's address.
    std::fs::write(config.join("strict.yaml"), STRICT)?;
    let old_client = Agent::start(&n1, &config)?;
    let old_server = Agent::start(&n2, &config)?;
    sleep.connect(httpbin.v4(8000), "warm-up")?;

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused, escaped) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let load = {
        let (stop, ok, refused, escaped) =
            (stop.clone(), ok.clone(), refused.clone(), escaped.clone());
        let (sleep, dst, server_ip) = (
            sleep.clone(),
            httpbin.v4(8000),
            std::net::IpAddr::from(httpbin.ipv4()),
        );
        thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match sleep.connect_timeout(dst, "steady", Duration::from_secs(10)) {
                    // Through the server's proxy the app sees its own pod address as the peer.
                    Ok(reply) if reply.peer.ip() == server_ip => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => escaped.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(format!("{e:#}"));
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        })
    };

    thread::sleep(Duration::from_millis(500));
    let new_client = Agent::start(&n1, &config)?;
    thread::sleep(Duration::from_millis(500));
    old_client.stop()?;
    thread::sleep(Duration::from_millis(500));
    let new_server = Agent::start(&n2, &config)?;
    thread::sleep(Duration::from_millis(500));
    old_server.stop()?;
    thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let errors = load.join().expect("load thread");

    let (ok, refused, escaped) = (
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        escaped.load(Ordering::Relaxed),
    );
    eprintln!("rolling restart under load: {ok} ok, {refused} refused, {escaped} escaped");
    assert!(ok > 20, "too little load to mean anything: {ok}");
    assert_eq!(refused, 0, "refused during restart: {errors:?}");
    assert_eq!(escaped, 0, "escaped capture during restart");
    let names =
        |progs: Vec<(String, String)>| progs.into_iter().map(|(_, n)| n).collect::<Vec<_>>();
    for node in [&n1, &n2] {
        let mut attached = names(testbed::bpf::cgroup_programs(node.cgroup().path())?);
        attached.sort();
        assert_eq!(
            attached,
            ["connect4", "connect6"],
            "one of each on {}",
            node.name()
        );
    }
    for pod in [&sleep, &httpbin] {
        let attached = names(testbed::bpf::cgroup_programs(pod.cgroup_path())?);
        assert_eq!(
            attached,
            ["sock_ops_cb"],
            "one sock_ops link on {}",
            pod.name()
        );
    }
    sleep.connect(httpbin.v4(8000), "after")?;
    drop((new_client, new_server));
    Ok(())
}
