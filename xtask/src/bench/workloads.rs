//! The client workloads (iperf3 bulk, wrk request/response) run inside the client pod, and the
//! parsing of what they print.
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use testbed::Pod;

/// One measured run, in the order the perf notes run them within a configuration's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Workload {
    Iperf1,
    Iperf8,
    KeepAlive16,
    KeepAlive1,
    Close16,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Iperf1,
        Workload::Iperf8,
        Workload::KeepAlive16,
        Workload::KeepAlive1,
        Workload::Close16,
    ];
}

/// What a run reports. Bulk runs fill `bytes` and `gbps`; wrk runs fill the rest.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outcome {
    pub gbps: f64,
    pub bytes: f64,
    /// Requests completed; with `Connection: close` this is also the number of connections.
    pub requests: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Socket errors and non-2xx responses: a healthy run has none.
    pub errors: u64,
}

/// Where the client sends HTTP and iperf3 traffic for one configuration (direct, or a local proxy).
#[derive(Debug, Clone, Copy)]
pub struct Targets {
    pub http: SocketAddr,
    pub iperf: SocketAddr,
}

/// Runs `workload` from `client` for `duration` and parses the result.
pub fn run(
    client: &Pod,
    targets: Targets,
    workload: Workload,
    duration: Duration,
) -> Result<Outcome> {
    let secs = duration.as_secs().max(1).to_string();
    let url = format!("http://{}/", targets.http);
    let mut cmd;
    match workload {
        Workload::Iperf1 | Workload::Iperf8 => {
            cmd = Command::new("iperf3");
            cmd.args(["-c", &targets.iperf.ip().to_string()])
                .args(["-p", &targets.iperf.port().to_string()])
                .args(["-t", &secs, "-J"]);
            if workload == Workload::Iperf8 {
                cmd.args(["-P", "8"]);
            }
        }
        Workload::KeepAlive16 | Workload::KeepAlive1 | Workload::Close16 => {
            let (connections, threads) = match workload {
                Workload::KeepAlive1 => ("1", "1"),
                _ => ("16", "2"),
            };
            cmd = Command::new("wrk");
            cmd.args(["-c", connections, "-t", threads, "--latency"])
                .args(["-d", &format!("{secs}s")]);
            if workload == Workload::Close16 {
                cmd.args(["-H", "Connection: close"]);
            }
            cmd.arg(&url);
        }
    }
    let shown = format!("{cmd:?}");
    let output = client.run_timeout(cmd, duration + Duration::from_secs(30))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{shown} failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    match workload {
        Workload::Iperf1 | Workload::Iperf8 => parse_iperf(&stdout),
        _ => parse_wrk(&stdout),
    }
    .with_context(|| format!("reading the output of {shown}"))
}

/// iperf3 `-J`: the receiver's view of the whole test, so bytes are those that arrived.
fn parse_iperf(json: &str) -> Result<Outcome> {
    let value: Value = serde_json::from_str(json).context("iperf3 -J is not JSON")?;
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        bail!("iperf3: {error}");
    }
    let received = &value["end"]["sum_received"];
    let bps = received["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second")?;
    let bytes = received["bytes"]
        .as_f64()
        .context("no end.sum_received.bytes")?;
    Ok(Outcome {
        gbps: bps / 1e9,
        bytes,
        ..Outcome::default()
    })
}

/// wrk's text report with `--latency`.
fn parse_wrk(text: &str) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", value] => outcome.p50_us = micros(value)?,
            ["99%", value] => outcome.p99_us = micros(value)?,
            ["Requests/sec:", value] => outcome.rps = value.parse()?,
            [count, "requests", "in", ..] => outcome.requests = count.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                outcome.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", value] => {
                outcome.errors += value.parse::<u64>()?
            }
            _ => {}
        }
    }
    ensure!(
        outcome.requests > 0.0 && outcome.p50_us > 0.0,
        "no requests or no latency distribution in:\n{text}"
    );
    Ok(outcome)
}

/// wrk prints latencies as `180.00us`, `3.86ms` or `1.20s`.
fn micros(value: &str) -> Result<f64> {
    let (number, scale) = if let Some(n) = value.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1e6)
    } else {
        bail!("latency {value:?} has no unit")
    };
    Ok(number.parse::<f64>()? * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://10.1.2.3:80/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   305.12us    1.01ms  40.00ms   98.00%
    Req/Sec    29.10k     2.00k   33.00k    70.00%
  Latency Distribution
     50%  180.00us
     75%  250.00us
     90%  400.00us
     99%    3.86ms
  578250 requests in 10.00s, 200.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  57825.00
Transfer/sec:     20.00MB
";

    #[test]
    fn wrk_report() {
        let o = parse_wrk(WRK).unwrap();
        assert_eq!(o.requests, 578_250.0);
        assert_eq!(o.rps, 57_825.0);
        assert_eq!(o.p50_us, 180.0);
        assert!((o.p99_us - 3860.0).abs() < 1e-6);
        assert_eq!(o.errors, 7);
    }

    #[test]
    fn wrk_without_latency_is_an_error() {
        assert!(parse_wrk("Requests/sec: 1.0\n").is_err());
    }

    #[test]
    fn iperf_json() {
        let o = parse_iperf(
            r#"{"end":{"sum_received":{"bytes":13000000000,"bits_per_second":10.4e9}}}"#,
        )
        .unwrap();
        assert_eq!(o.bytes, 13e9);
        assert!((o.gbps - 10.4).abs() < 1e-9);
        assert!(parse_iperf(r#"{"error":"unable to connect"}"#).is_err());
    }

    #[test]
    fn latency_units() {
        assert_eq!(micros("1.5s").unwrap(), 1.5e6);
        assert_eq!(micros("2.00ms").unwrap(), 2000.0);
        assert!(micros("12").is_err());
    }
}
