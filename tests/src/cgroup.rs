//! cgroup v2 directories: the identity the agent keys workloads by.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::mounts::cgroup2_mount;

/// A cgroup v2 directory created by the test bed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    path: PathBuf,
    rel: String,
    id: u64,
}

impl Cgroup {
    /// Creates `rel` (a path under the cgroup2 mount, starting with `/`).
    pub(crate) fn create(rel: &str) -> Result<Cgroup> {
        let path = cgroup2_mount()?.join(rel.trim_start_matches('/'));
        fs::create_dir(&path).with_context(|| format!("mkdir cgroup {}", path.display()))?;
        let id = fs::metadata(&path)?.ino();
        Ok(Cgroup {
            path,
            rel: rel.to_owned(),
            id,
        })
    }

    /// Absolute path, e.g. `/sys/fs/cgroup/unified/smt-123-0-capture/n1`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path relative to the cgroup2 mount, with a leading `/` (the form of `/proc/PID/cgroup`
    /// and of the `sockmesh.io/cgroup` annotation).
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// Inode of the directory: the value `bpf_get_current_cgroup_id()` returns for its members.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Pids currently in this cgroup (not its descendants).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let text = fs::read_to_string(self.path.join("cgroup.procs"))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }
}

/// The cgroup (relative to the cgroup2 mount) a process is in, from `/proc/PID/cgroup`.
pub fn cgroup_of(pid: u32) -> Result<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .with_context(|| format!("pid {pid} has no cgroup v2 entry"))
}

/// Kills every process below `dir` and removes the whole subtree, deepest first. A subtree that
/// vanishes meanwhile (a concurrent sweep) is not an error.
pub(crate) fn destroy_tree(dir: &Path) -> Result<()> {
    match destroy_existing(dir) {
        Err(_) if !dir.exists() => Ok(()),
        other => other,
    }
}

fn destroy_existing(dir: &Path) -> Result<()> {
    // cgroup.kill (Linux 5.14+) SIGKILLs the whole subtree atomically, so nothing can fork away.
    fs::write(dir.join("cgroup.kill"), "1").with_context(|| format!("kill {}", dir.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while populated(dir)? {
        if Instant::now() > deadline {
            bail!("processes in {} did not exit", dir.display());
        }
        thread::sleep(Duration::from_millis(5));
    }
    remove_deepest_first(dir)
}

fn populated(dir: &Path) -> Result<bool> {
    let events = fs::read_to_string(dir.join("cgroup.events"))?;
    Ok(events.lines().any(|l| l == "populated 1"))
}

fn remove_deepest_first(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_deepest_first(&entry.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("rmdir {}", dir.display()))
        }
        _ => Ok(()),
    }
}
