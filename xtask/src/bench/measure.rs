//! What a proxy process costs, read from /proc as the perf notes did: CPU from utime+stime of
//! `/proc/<pid>/stat` (the whole thread group, all threads included), memory from VmRSS and VmHWM.
use std::fs;

use anyhow::{Context as _, Result};

use crate::cmd::Cmd;

/// Clock ticks per second, the unit of utime/stime.
pub fn clock_ticks() -> Result<f64> {
    let text = Cmd::new("getconf").arg("CLK_TCK").read()?;
    text.trim()
        .parse()
        .with_context(|| format!("getconf CLK_TCK printed {text:?}"))
}

/// CPU seconds used so far by the process `pid`, summed over all its threads.
pub fn cpu_seconds(pid: u32, ticks_per_s: f64) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may contain spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .with_context(|| format!("{path} has no ')'"))?
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of proc(5) (utime, stime) are at 11 and 12 after pid and comm.
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("{path}: field {} unreadable", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) / ticks_per_s)
}

/// Resident memory of a process in MB (10^6 bytes): current and high-water mark.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_mb: f64,
    pub hwm_mb: f64,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = |key: &str| -> Result<f64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .with_context(|| format!("{path} has no readable {key}"))
    };
    Ok(Memory {
        rss_mb: kib("VmRSS:")? * 1024.0 / 1e6,
        hwm_mb: kib("VmHWM:")? * 1024.0 / 1e6,
    })
}

/// CPU seconds of every process in `pids`, summed; the pair of proxies of one configuration.
pub fn pair_cpu(pids: &[u32], ticks_per_s: f64) -> Result<f64> {
    pids.iter().map(|&pid| cpu_seconds(pid, ticks_per_s)).sum()
}
