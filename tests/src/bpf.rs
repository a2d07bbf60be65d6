//! Reading the agent's pinned BPF state with bpftool, as an operator would.
use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};
use serde_json::Value;

fn bpftool_json(args: &[&str]) -> Result<Value> {
    let out = Command::new("bpftool")
        .arg("-j")
        .args(args)
        .output()
        .context("running bpftool (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!("bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_str(&text).context("parsing bpftool output")
}

/// Entries of a pinned map (`<pin-dir>/v1/<NAME>`).
pub fn map_dump(pin_dir: &Path, name: &str) -> Result<Vec<Value>> {
    let path = pin_dir.join("v1").join(name);
    let v = bpftool_json(&["map", "dump", "pinned", path.to_str().context("path")?])?;
    // With BTF, bpftool -j puts the typed view under "formatted" next to raw byte arrays.
    Ok(v.as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| e.get("formatted").cloned().unwrap_or_else(|| e.clone()))
                .collect()
        })
        .unwrap_or_default())
}

/// Sum over CPUs of one `STATS` counter (index from `sockmesh_common::stat`).
pub fn stat(pin_dir: &Path, index: u64) -> Result<u64> {
    for e in map_dump(pin_dir, "STATS")? {
        if e["key"].as_u64() == Some(index) {
            return Ok(e["values"]
                .as_array()
                .map(|vs| vs.iter().filter_map(|v| v["value"].as_u64()).sum())
                .unwrap_or(0));
        }
    }
    Ok(0)
}

/// `(attach type, program name)` of the programs attached directly to a cgroup.
pub fn cgroup_programs(cgroup: &Path) -> Result<Vec<(String, String)>> {
    let v = bpftool_json(&["cgroup", "show", cgroup.to_str().context("path")?])?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["attach_type"].as_str().unwrap_or_default().to_owned(),
                        p["name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}
