//! `cargo xtask demo [--keep | --clean] [--kubernetes]`: the seed article on one machine. Sets the
//! machine up, builds the agent, builds the two-node seed topology (`testbed::seed`) with an agent
//! per node (with `--kubernetes`: agents in cluster mode against the test bed's API server),
//! walks through the policy steps and prints each step's connectivity matrix. Exits non-zero when
//! any cell behaved otherwise than expected, so it doubles as a smoke test.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{SigSet, Signal};
use testbed::seed::{CLIENTS, CellReport, SERVICES, Seed, Step, StepReport, steps};

use crate::cmd::Cmd;
use crate::setup;

/// The topology, shared with the Ctrl-C watcher, which takes and drops it.
type Shared = Arc<Mutex<Option<Seed>>>;

/// Runs the demo; `keep` leaves everything running, `clean` only removes leftovers.
pub fn run(root: &Path, keep: bool, clean: bool, kubernetes: bool) -> Result<()> {
    if clean {
        let swept = testbed::sweep_stale()?;
        println!(
            "removed {} network namespaces, {} cgroup trees (with their processes), {} work directories, {} pin directories",
            swept.netns.len(),
            swept.cgroups.len(),
            swept.dirs.len(),
            swept.pins.len()
        );
        return Ok(());
    }
    if Cmd::new("id").arg("-u").read()?.trim() != "0" {
        bail!("the demo builds network namespaces, cgroups and eBPF programs: run it as root");
    }
    setup::run()?;
    let (sockmesh, pod_tool) = build(root)?;
    testbed::set_pod_tool(&pod_tool);

    println!(
        "\n==> building the seed topology: nodes n1 (clients) and n2 (servers), an agent on each"
    );
    // Blocked before the first thread starts, so only the watcher receives them (children get
    // a clean mask from std::process).
    let signals = interrupt_signals();
    signals.thread_block()?;
    let mut seed = if kubernetes {
        Seed::build_kubernetes("demo")?
    } else {
        Seed::build("demo")?
    };
    seed.start_agents(&[])?;
    let shared: Shared = Arc::new(Mutex::new(Some(seed)));
    watch_interrupts(signals, shared.clone());
    print_topology(&lock(&shared))?;

    let steps = steps();
    let mut failed = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        println!(
            "\n==> step {}/{} {}: {}",
            i + 1,
            steps.len(),
            step.name,
            step.title
        );
        print_policy(step, i.checked_sub(1).map(|p| &steps[p]));
        let report = run_step(&shared, step)?;
        print!("{report}");
        if !report.passed() {
            failed.push(step.name);
        }
    }
    let seed = lock(&shared).take().context("interrupted")?;
    print_hints(&seed, &sockmesh, keep);
    if keep {
        print_keep(&seed, &pod_tool);
        // Leaves processes, namespaces and pins in place; `--clean` removes them later.
        std::mem::forget(seed);
    } else {
        drop(seed);
    }
    if !failed.is_empty() {
        bail!("steps with unexpected cells: {}", failed.join(", "));
    }
    println!("\nevery cell behaved as expected");
    Ok(())
}

fn interrupt_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// On SIGINT/SIGTERM: waits for the probe in flight, drops the topology (agents, pods, pins),
/// exits 130.
fn watch_interrupts(signals: SigSet, shared: Shared) {
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            eprintln!("\n{signal}: removing the demo topology");
            drop(lock(&shared).take());
            std::process::exit(130);
        }
    });
}

fn lock(shared: &Shared) -> MutexGuard<'_, Option<Seed>> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Applies the step and probes cell by cell, holding the lock only for one probe at a time.
fn run_step(shared: &Shared, step: &Step) -> Result<StepReport> {
    lock(shared)
        .as_ref()
        .context("interrupted")?
        .apply(&step.policy)?;
    let mut cells = Vec::new();
    for cell in &step.cells {
        let guard = lock(shared);
        let seed = guard.as_ref().context("interrupted")?;
        let observed = seed.probe(cell.client, &cell.service, cell.port)?;
        cells.push(CellReport {
            cell: cell.clone(),
            observed,
        });
    }
    Ok(StepReport {
        name: step.name,
        title: step.title,
        cells,
    })
}

/// Builds the agent and pod-tool next to this xtask binary (where the test bed looks for them)
/// and returns their paths.
fn build(root: &Path) -> Result<(PathBuf, PathBuf)> {
    println!("\n==> building sockmesh and pod-tool");
    // Two builds, as the tests do them: one command for both would unify features differently
    // and make the next test run rebuild the agent.
    for (package, bin) in [
        ("sockmesh-agent", "sockmesh"),
        ("sockmesh-tests", "pod-tool"),
    ] {
        Cmd::new("cargo")
            .args(["build", "-p", package, "--bin", bin])
            .current_dir(root)
            .run()?;
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("xtask binary has no directory")?;
    Ok((dir.join("sockmesh"), dir.join("pod-tool")))
}

fn print_topology(seed: &Option<Seed>) -> Result<()> {
    let seed = seed.as_ref().context("interrupted")?;
    println!("  namespaces in the mesh: test1 test2 bookinfo; outside: test3");
    for client in CLIENTS {
        let pod = seed.pod(client);
        println!("  n1  {client:<24} {}", pod.ipv4());
    }
    for svc in SERVICES {
        let pod = seed.pod(&svc.pod_key());
        println!(
            "  n2  {:<24} {}  service {} {} ports {:?}",
            svc.pod_key(),
            pod.ipv4(),
            svc.host(),
            svc.cluster_ip,
            svc.ports
        );
    }
    println!("  mesh clients connect to the cluster IP, test3/sleep to the pod IP");
    Ok(())
}

/// The step's policy YAML; when it extends the previous step's, only what it adds.
fn print_policy(step: &Step, previous: Option<&Step>) {
    if step.policy.trim().is_empty() {
        println!("  (no policy)");
        return;
    }
    let added = match previous {
        Some(p) if !p.policy.is_empty() && step.policy.starts_with(&p.policy) => {
            println!("  policy of step {}, plus:", p.name);
            &step.policy[p.policy.len()..]
        }
        _ => step.policy.as_str(),
    };
    for line in added.lines().filter(|l| !l.trim().is_empty()) {
        println!("    {line}");
    }
}

fn print_hints(seed: &Seed, sockmesh: &Path, keep: bool) {
    let pins = seed.node("n1").pin_dir().join("v1");
    let config = seed.config_dir();
    println!();
    if !keep {
        println!("(run `cargo xtask demo --keep` to explore the topology afterwards)");
    }
    println!(
        "hint: `bpftool map dump pinned {}/CONNS` (also WORKLOADS, POD_ADDRS) for n1's capture maps,\n      \
         `{} explain --config {} --from test1/sleep --to httpbin.test2:8000` for a decision",
        pins.display(),
        sockmesh.display(),
        config.display()
    );
}

fn print_keep(seed: &Seed, pod_tool: &Path) {
    println!(
        "\nthe topology and both agents keep running. A shell in a pod (its netns and cgroup):"
    );
    for key in CLIENTS {
        let pod = seed.pod(key);
        println!(
            "  {key}: nsenter --net={} sh -c 'echo $$ > {}/cgroup.procs && exec bash'",
            pod.netns_path().display(),
            pod.main().cgroup().path().display()
        );
    }
    println!(
        "then e.g. `{} connect 172.20.2.1:8000 hello` (httpbin.test2's cluster IP)",
        pod_tool.display()
    );
    for agent in seed.agents() {
        println!(
            "agent {}: pid {}, `sockmesh status --admin {}`",
            agent.node().name(),
            agent.pid(),
            agent.admin_addr()
        );
    }
    println!(
        "config (edit to change policy): {}",
        seed.config_dir().display()
    );
    println!("clean up everything: `cargo xtask demo --clean`");
}
