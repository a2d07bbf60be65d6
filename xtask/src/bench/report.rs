//! Turns the blocks into the report: medians over rounds and the median of per-round ratios to
//! direct, as the main table (rows = metrics, columns = configurations), the goals table for
//! ISTIO_MUTUAL, BPF runs per connection, memory per pod, and an SVG bar chart of the ratios.
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};

use super::configs::Config;
use super::workloads::Workload;
use super::{Block, Results, plot};
use crate::cmd::Cmd;

/// How a metric compares with direct.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Median of the per-round ratio to direct.
    Ratio,
    /// Median of the per-round difference to direct (added latency).
    Added,
    /// A proxy cost: direct has none.
    Proxy,
}

/// A performance target for sockmesh.
#[derive(Clone, Copy)]
enum Goal {
    RatioAtLeast(f64),
    AtMost(f64),
}

struct Metric {
    label: &'static str,
    unit: &'static str,
    kind: Kind,
    goal: Option<Goal>,
    get: fn(&Block) -> Option<f64>,
}

fn outcome(block: &Block, workload: Workload) -> Option<super::workloads::Outcome> {
    block.runs.get(&workload).map(|run| run.outcome)
}

/// Both proxies' CPU seconds in `workload`'s run, when the configuration has proxies.
fn proxy_cpu(block: &Block, workload: Workload) -> Option<f64> {
    if block.config == Config::Direct {
        return None;
    }
    block.runs.get(&workload).map(|run| run.proxy_cpu_s)
}

const METRICS: &[Metric] = &[
    Metric {
        label: "iperf3, 1 stream",
        unit: "Gbit/s",
        kind: Kind::Ratio,
        goal: Some(Goal::RatioAtLeast(0.60)),
        get: |b| outcome(b, Workload::Iperf1).map(|o| o.gbps),
    },
    Metric {
        label: "iperf3, 8 streams",
        unit: "Gbit/s",
        kind: Kind::Ratio,
        goal: Some(Goal::RatioAtLeast(0.55)),
        get: |b| outcome(b, Workload::Iperf8).map(|o| o.gbps),
    },
    Metric {
        label: "wrk keep-alive c16",
        unit: "req/s",
        kind: Kind::Ratio,
        goal: Some(Goal::RatioAtLeast(0.50)),
        get: |b| outcome(b, Workload::KeepAlive16).map(|o| o.rps),
    },
    Metric {
        label: "wrk keep-alive c16, p50",
        unit: "µs",
        kind: Kind::Ratio,
        goal: None,
        get: |b| outcome(b, Workload::KeepAlive16).map(|o| o.p50_us),
    },
    Metric {
        label: "wrk keep-alive c16, p99",
        unit: "µs",
        kind: Kind::Ratio,
        goal: None,
        get: |b| outcome(b, Workload::KeepAlive16).map(|o| o.p99_us),
    },
    Metric {
        label: "wrk keep-alive c1",
        unit: "req/s",
        kind: Kind::Ratio,
        goal: None,
        get: |b| outcome(b, Workload::KeepAlive1).map(|o| o.rps),
    },
    Metric {
        label: "added p50 per request, c1 (direct: its p50)",
        unit: "µs",
        kind: Kind::Added,
        goal: Some(Goal::AtMost(50.0)),
        get: |b| outcome(b, Workload::KeepAlive1).map(|o| o.p50_us),
    },
    Metric {
        label: "wrk keep-alive c1, p99",
        unit: "µs",
        kind: Kind::Ratio,
        goal: None,
        get: |b| outcome(b, Workload::KeepAlive1).map(|o| o.p99_us),
    },
    Metric {
        label: "new connections (`Connection: close` c16)",
        unit: "conn/s",
        kind: Kind::Ratio,
        goal: Some(Goal::RatioAtLeast(0.30)),
        get: |b| outcome(b, Workload::Close16).map(|o| o.rps),
    },
    Metric {
        label: "`Connection: close` c16, p50",
        unit: "µs",
        kind: Kind::Ratio,
        goal: None,
        get: |b| outcome(b, Workload::Close16).map(|o| o.p50_us),
    },
    Metric {
        label: "`Connection: close` c16, p99",
        unit: "µs",
        kind: Kind::Ratio,
        goal: None,
        get: |b| outcome(b, Workload::Close16).map(|o| o.p99_us),
    },
    Metric {
        label: "both proxies' CPU per GB, 1 stream",
        unit: "CPU-s",
        kind: Kind::Proxy,
        goal: Some(Goal::AtMost(1.8)),
        get: |b| {
            let bytes = outcome(b, Workload::Iperf1)?.bytes;
            Some(proxy_cpu(b, Workload::Iperf1)? / (bytes / 1e9))
        },
    },
    Metric {
        label: "both proxies' CPU per GB, 8 streams",
        unit: "CPU-s",
        kind: Kind::Proxy,
        goal: None,
        get: |b| {
            let bytes = outcome(b, Workload::Iperf8)?.bytes;
            Some(proxy_cpu(b, Workload::Iperf8)? / (bytes / 1e9))
        },
    },
    Metric {
        label: "both proxies' CPU per 1000 keep-alive requests (c16)",
        unit: "CPU-ms",
        kind: Kind::Proxy,
        goal: None,
        get: |b| {
            let requests = outcome(b, Workload::KeepAlive16)?.requests;
            Some(proxy_cpu(b, Workload::KeepAlive16)? * 1e3 / (requests / 1e3))
        },
    },
    Metric {
        label: "both proxies' CPU per 1000 new connections",
        unit: "CPU-ms",
        kind: Kind::Proxy,
        goal: Some(Goal::AtMost(250.0)),
        get: |b| {
            let connections = outcome(b, Workload::Close16)?.requests;
            Some(proxy_cpu(b, Workload::Close16)? * 1e3 / (connections / 1e3))
        },
    },
    Metric {
        label: "proxy resident memory at block end (larger of the two)",
        unit: "MB",
        kind: Kind::Proxy,
        goal: Some(Goal::AtMost(16.0)),
        get: |b| b.rss_mb,
    },
    Metric {
        label: "proxy peak resident memory (VmHWM, larger of the two)",
        unit: "MB",
        kind: Kind::Proxy,
        goal: Some(Goal::AtMost(32.0)),
        get: |b| b.hwm_mb,
    },
];

/// Issue 7's bound on memory per enrolled pod.
const POD_MEMORY_GOAL_KIB: f64 = 50.0;

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// A configuration's figure for one metric: the median value, and the median per-round ratio
/// to direct where the metric has one.
#[derive(Clone, Copy, Debug)]
struct Cell {
    value: f64,
    ratio: Option<f64>,
}

fn cell(results: &Results, metric: &Metric, config: Config) -> Option<Cell> {
    let of = |config: Config| {
        results
            .blocks
            .iter()
            .filter(move |b| b.config == config)
            .filter_map(|b| Some((b.round, (metric.get)(b)?)))
    };
    let direct = |round: usize| {
        of(Config::Direct)
            .find(|(r, _)| *r == round)
            .map(|(_, v)| v)
    };
    let paired: Vec<(f64, f64)> = of(config)
        .filter_map(|(round, v)| Some((v, direct(round)?)))
        .collect();
    match metric.kind {
        Kind::Added if config != Config::Direct => Some(Cell {
            value: median(paired.iter().map(|(v, d)| v - d).collect())?,
            ratio: None,
        }),
        _ => Some(Cell {
            value: median(of(config).map(|(_, v)| v).collect())?,
            ratio: (metric.kind == Kind::Ratio && config != Config::Direct)
                .then(|| median(paired.iter().map(|(v, d)| v / d).collect()))
                .flatten(),
        }),
    }
}

fn number(v: f64) -> String {
    let abs = v.abs();
    if abs.round() >= 1000.0 {
        let digits = format!("{:.0}", abs);
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if abs >= 100.0 {
        format!("{v:.0}")
    } else if abs >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ratio(r: f64) -> String {
    if r < 0.1 {
        format!("{r:.3}x")
    } else {
        format!("{r:.2}x")
    }
}

fn show(metric: &Metric, config: Config, cell: Option<Cell>) -> String {
    match cell {
        None => "–".to_owned(),
        Some(Cell {
            value,
            ratio: Some(r),
        }) => format!("{} ({})", number(value), ratio(r)),
        Some(Cell { value, .. }) if metric.kind == Kind::Added && config != Config::Direct => {
            format!("{}{}", if value >= 0.0 { "+" } else { "" }, number(value))
        }
        Some(Cell { value, .. }) => number(value),
    }
}

fn goal_text(goal: Goal, unit: &str) -> String {
    match goal {
        Goal::RatioAtLeast(r) => format!("≥ {r:.2}x"),
        Goal::AtMost(v) => format!("≤ {} {unit}", number(v)),
    }
}

fn meets(goal: Goal, cell: Cell) -> Option<bool> {
    match goal {
        Goal::RatioAtLeast(r) => cell.ratio.map(|x| x >= r),
        Goal::AtMost(v) => Some(cell.value <= v),
    }
}

fn mark(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    }
}

/// Rows = metrics, columns = configurations, then the target and whether ISTIO_MUTUAL
/// meets it.
fn main_table(results: &Results, out: &mut String) {
    let mtls = results.configs.contains(&Config::SockmeshMtls);
    let _ = write!(out, "| metric | unit |");
    for config in &results.configs {
        let _ = write!(out, " {} |", config.title());
    }
    let _ = writeln!(out, " target | ISTIO_MUTUAL meets it |");
    let _ = writeln!(
        out,
        "|---|---|{}---|---|",
        "---|".repeat(results.configs.len())
    );
    for metric in METRICS {
        let _ = write!(out, "| {} | {} |", metric.label, metric.unit);
        for &config in &results.configs {
            let _ = write!(
                out,
                " {} |",
                show(metric, config, cell(results, metric, config))
            );
        }
        let (target, ok) = match metric.goal {
            Some(goal) => (
                goal_text(goal, metric.unit),
                mtls.then(|| cell(results, metric, Config::SockmeshMtls))
                    .flatten()
                    .and_then(|c| meets(goal, c)),
            ),
            None => (String::new(), None),
        };
        let _ = writeln!(
            out,
            " {target} | {} |",
            if target.is_empty() { "" } else { mark(ok) }
        );
    }
}

/// The goals set for ISTIO_MUTUAL (latency, throughput, CPU), with the figures that answer them.
fn mtls_goals_table(results: &Results, out: &mut String) {
    let config = Config::SockmeshMtls;
    let find = |label: &str| {
        METRICS
            .iter()
            .find(|m| m.label == label)
            .expect("metric exists")
    };
    let get = |label: &str| cell(results, find(label), config);
    let rows: [(&str, Option<Cell>, &str, Option<bool>); 8] = {
        let one = get("iperf3, 1 stream");
        let added = get("added p50 per request, c1 (direct: its p50)");
        [
            (
                "bulk throughput, 1 stream (ratio to direct)",
                one,
                "≥ 0.50x",
                one.and_then(|c| c.ratio.map(|r| r >= 0.5)),
            ),
            (
                "bulk throughput, 8 streams",
                get("iperf3, 8 streams"),
                "",
                None,
            ),
            (
                "added p50 per request, 1 connection (µs)",
                added,
                "< 100 µs",
                added.map(|c| c.value < 100.0),
            ),
            (
                "keep-alive c16 p50 (µs)",
                get("wrk keep-alive c16, p50"),
                "",
                None,
            ),
            (
                "keep-alive c16 p99 (µs)",
                get("wrk keep-alive c16, p99"),
                "",
                None,
            ),
            (
                "new connections/s incl. the mTLS handshake",
                get("new connections (`Connection: close` c16)"),
                "",
                None,
            ),
            (
                "both proxies' CPU-s per GB / CPU-ms per 1000 new connections",
                None,
                "",
                None,
            ),
            (
                "proxy resident memory at block end / peak (MB)",
                None,
                "does not grow with traffic",
                no_growth(results, config),
            ),
        ]
    };
    let _ = writeln!(
        out,
        "| ISTIO_MUTUAL | figure | aim | met |\n|---|---|---|---|"
    );
    for (label, value, aim, ok) in rows {
        let figure = match label {
            l if l.starts_with("both proxies") => format!(
                "{} / {}",
                get("both proxies' CPU per GB, 1 stream").map_or("–".into(), |c| number(c.value)),
                get("both proxies' CPU per 1000 new connections")
                    .map_or("–".into(), |c| number(c.value)),
            ),
            l if l.starts_with("proxy resident") => {
                let per_round: Vec<String> = results
                    .blocks
                    .iter()
                    .filter(|b| b.config == config)
                    .filter_map(|b| b.rss_mb.map(number))
                    .collect();
                format!(
                    "{} / {} (at the end of rounds 1..: {})",
                    get("proxy resident memory at block end (larger of the two)")
                        .map_or("–".into(), |c| number(c.value)),
                    get("proxy peak resident memory (VmHWM, larger of the two)")
                        .map_or("–".into(), |c| number(c.value)),
                    per_round.join(", ")
                )
            }
            _ => value.map_or("–".into(), |c| match c.ratio {
                Some(r) => format!("{} ({})", number(c.value), ratio(r)),
                None => number(c.value),
            }),
        };
        let met = if aim.is_empty() { "" } else { mark(ok) };
        let _ = writeln!(out, "| {label} | {figure} | {aim} | {met} |");
    }
}

/// Whether a configuration's resident memory at the end of its blocks stays within 10% of the
/// first round's: `None` with fewer than two rounds.
fn no_growth(results: &Results, config: Config) -> Option<bool> {
    let rss: Vec<f64> = results
        .blocks
        .iter()
        .filter(|b| b.config == config)
        .filter_map(|b| b.rss_mb)
        .collect();
    let (first, rest) = rss.split_first()?;
    (!rest.is_empty()).then(|| rest.iter().all(|r| *r <= first * 1.1))
}

/// Medians over rounds of each agent program's runs per new connection.
fn bpf_table(results: &Results, out: &mut String) {
    let configs: Vec<Config> = results
        .configs
        .iter()
        .copied()
        .filter(|c| c.is_sockmesh())
        .collect();
    let mut programs: Vec<&String> = results.blocks.iter().flat_map(|b| b.bpf.keys()).collect();
    programs.sort();
    programs.dedup();
    if programs.is_empty() {
        out.push_str("No BPF counters were read.\n");
        return;
    }
    let _ = write!(out, "| node/program |");
    for config in &configs {
        let _ = write!(
            out,
            " {}: runs per connection | ns per run |",
            config.title()
        );
    }
    let _ = writeln!(out, "\n|---|{}", "---|---|".repeat(configs.len()));
    for program in programs {
        let _ = write!(out, "| {program} |");
        for &config in &configs {
            let runs = |f: fn(&super::bpfstats::Runs) -> f64| {
                median(
                    results
                        .blocks
                        .iter()
                        .filter(|b| b.config == config)
                        .filter_map(|b| b.bpf.get(program).map(f))
                        .collect(),
                )
                .map_or("–".into(), number)
            };
            let _ = write!(out, " {} | {} |", runs(|r| r.count), runs(|r| r.ns));
        }
        out.push('\n');
    }
}

/// Raw per-round values of the headline metrics, to show the spread.
fn per_round(results: &Results, out: &mut String) {
    for label in [
        "iperf3, 1 stream",
        "wrk keep-alive c16",
        "new connections (`Connection: close` c16)",
    ] {
        let metric = METRICS
            .iter()
            .find(|m| m.label == label)
            .expect("metric exists");
        let _ = writeln!(out, "- {label} ({}):", metric.unit);
        for &config in &results.configs {
            let values: Vec<String> = results
                .blocks
                .iter()
                .filter(|b| b.config == config)
                .map(|b| (metric.get)(b).map_or("–".into(), number))
                .collect();
            let _ = writeln!(out, "  - {}: {}", config.title(), values.join(" "));
        }
    }
}

fn first_line(program: &str, arg: &str) -> String {
    Cmd::new(program)
        .arg(arg)
        .read_all()
        .map(|(_, text)| text.lines().next().unwrap_or_default().trim().to_owned())
        .unwrap_or_else(|_| format!("{program}: not found"))
}

/// Markdown of the whole report.
pub fn markdown(results: &Results, svg_name: &str) -> String {
    let mut out = String::from("# Performance\n\n");
    let _ = writeln!(
        out,
        "Pod to pod across two emulated nodes of the test bed (client pod on n1, nginx and iperf3 \
         in the server pod on n2), measured interleaved per round as in the perf notes: {} round(s), \
         {} s per run, every configuration's proxies started before its block and stopped after it. \
         Values are medians over rounds; a ratio in parentheses is the median over rounds of \
         (configuration / direct in the same round). Latencies are wrk's. CPU is utime+stime of \
         both proxy processes (the two agents, or the two HAProxies) over the run; memory is the \
         larger proxy's VmRSS at the end of a block and VmHWM.\n",
        results.blocks.iter().map(|b| b.round).max().unwrap_or(0),
        results.duration_s,
    );
    out.push_str(
        "Configurations: **direct** (no agent running, nothing attached); **sockmesh DISABLE** \
         (both agents, `--no-auto-mtls`: plaintext through both proxies); **sockmesh ISTIO_MUTUAL** \
         (both agents, default auto mTLS; each block checks that the server-side agent counted \
         `connection_security_policy=\"mutual_tls\"`); **HAProxy mTLS pair** (Debian's HAProxy in \
         each pod, `nbthread 2`, TCP mode, TLS 1.3 with leaf certificates issued by the agents' mesh \
         CA and verified both ways, default TLS session reuse); **HAProxy plain relay** (the same \
         pair without TLS). The agents run with `--access-log off` and info logging; they are \
         stopped and uninstalled after their blocks.\n\n",
    );
    let _ = writeln!(
        out,
        "Reproduce (as root, from the workspace root):\n\n```\n{}\n```\n",
        results.command
    );
    let _ = writeln!(
        out,
        "Machine: {} vCPU, kernel {}; load average at start `{}`. {}, {}, {}, {}.\n",
        Cmd::new("nproc").read().unwrap_or_default().trim(),
        Cmd::new("uname")
            .arg("-r")
            .read()
            .unwrap_or_default()
            .trim(),
        results.load_at_start,
        first_line("iperf3", "--version"),
        first_line("wrk", "-v"),
        first_line("haproxy", "-v"),
        first_line("nginx", "-v"),
    );
    out.push_str("## Results\n\n");
    main_table(results, &mut out);
    let _ = writeln!(out, "\n![Ratios to direct]({svg_name})\n");
    if let Some(memory) = &results.pod_memory {
        let per_pod = memory.per_pod_kib();
        let _ = writeln!(
            out,
            "Agent memory per enrolled pod: {} KiB ({} pods on one agent: RSS {} MB with none, {} MB \
             with all; target ≤ {} KiB: {}).\n",
            number(per_pod),
            memory.pods,
            number(memory.baseline_mb),
            number(memory.loaded_mb),
            number(POD_MEMORY_GOAL_KIB),
            mark(Some(per_pod <= POD_MEMORY_GOAL_KIB)),
        );
    }
    if results.configs.contains(&Config::SockmeshMtls) {
        out.push_str("## ISTIO_MUTUAL against its goals\n\n");
        mtls_goals_table(results, &mut out);
        out.push('\n');
    }
    out.push_str(
        "## BPF program runs per new connection\n\nFrom `kernel.bpf_stats_enabled=1` (on only \
         during the `Connection: close` runs of the sockmesh blocks, then restored): the delta of \
         `bpftool prog show` run_cnt over the run divided by the connections wrk made, for every \
         program linked from each agent's pin directory.\n\n",
    );
    bpf_table(results, &mut out);
    out.push_str("\n## Per-round values\n\n");
    per_round(results, &mut out);
    if !results.problems.is_empty() {
        out.push_str("\n## Problems during the run\n\n");
        for problem in &results.problems {
            let _ = writeln!(out, "- {}", problem.replace('\n', " "));
        }
    }
    out
}

/// Writes the markdown to `out` and the plot next to it, and prints the markdown.
pub fn write(results: &Results, out: &Path) -> Result<()> {
    let svg = out.with_extension("svg");
    let svg_name = svg
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("performance.svg")
        .to_owned();
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bars: Vec<plot::Group> = METRICS
        .iter()
        .filter(|m| m.kind == Kind::Ratio && m.unit != "µs")
        .map(|m| plot::Group {
            label: m.label.trim_start_matches("wrk ").replace('`', ""),
            bars: results
                .configs
                .iter()
                .filter(|c| **c != Config::Direct)
                .map(|&c| (c, cell(results, m, c).and_then(|cell| cell.ratio)))
                .collect(),
        })
        .collect();
    plot::draw(&svg, &bars)?;
    let text = markdown(results, &svg_name);
    fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    println!("{text}");
    println!("bench: wrote {} and {}", out.display(), svg.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(number(57_825.4), "57,825");
        assert_eq!(number(818.0), "818");
        assert_eq!(number(1952.0), "1,952");
        assert_eq!(number(999.8), "1,000");
        assert_eq!(number(10.43), "10.4");
        assert_eq!(number(0.473), "0.47");
        assert_eq!(ratio(0.035), "0.035x");
    }

    #[test]
    fn empty_run_still_explains_itself() {
        let results = Results {
            blocks: Vec::new(),
            configs: vec![Config::Direct, Config::SockmeshMtls],
            pod_memory: None,
            problems: vec!["round 1: broken\nbadly".to_owned()],
            command: "cargo xtask bench --quick".to_owned(),
            load_at_start: "0.10 0.20 0.30".to_owned(),
            duration_s: 3,
        };
        let text = markdown(&results, "performance.svg");
        for part in [
            "Configurations: **direct**",
            "cargo xtask bench --quick",
            "| iperf3, 1 stream | Gbit/s | – | – | ≥ 0.60x | – |",
            "No BPF counters were read.",
            "- round 1: broken badly",
        ] {
            assert!(text.contains(part), "{part:?} missing from:\n{text}");
        }
    }
}
