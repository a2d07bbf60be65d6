//! Finding where a filesystem type is mounted, from `/proc/self/mountinfo`: hosts differ
//! (cgroup2 is `/sys/fs/cgroup` on unified hosts and `/sys/fs/cgroup/unified` on hybrid ones).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};

fn find(fstype: &str) -> Result<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    info.lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == fstype).then(|| left.split_whitespace().nth(4))?
        })
        .map(PathBuf::from)
        .with_context(|| format!("no {fstype} mount in /proc/self/mountinfo"))
}

fn cached(cell: &'static OnceLock<PathBuf>, fstype: &str) -> Result<&'static Path> {
    if let Some(p) = cell.get() {
        return Ok(p);
    }
    let found = find(fstype)?;
    Ok(cell.get_or_init(|| found))
}

/// Where cgroup v2 is mounted.
pub fn cgroup2_mount() -> Result<&'static Path> {
    static MOUNT: OnceLock<PathBuf> = OnceLock::new();
    cached(&MOUNT, "cgroup2")
}

/// Where the BPF filesystem (pinned maps and links) is mounted; mounted at `/sys/fs/bpf` first when
/// the host has none (a fresh VM need not have it; the agent does the same).
pub fn bpffs_mount() -> Result<&'static Path> {
    static MOUNT: OnceLock<PathBuf> = OnceLock::new();
    // One mount only, even when parallel tests get here together: a second bpffs stacked on the
    // first would hide the pins made through it.
    static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
    if MOUNT.get().is_none() && find("bpf").is_err() {
        nix::mount::mount(
            Some("bpf"),
            "/sys/fs/bpf",
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting bpffs at /sys/fs/bpf")?;
    }
    cached(&MOUNT, "bpf")
}
