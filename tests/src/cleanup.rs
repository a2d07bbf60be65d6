//! Removing what crashed runs left behind. Every resource name starts with `smt-<pid>-`, so a
//! leftover is recognised by its prefix and is only removed once that pid is dead.

use std::fs;
use std::path::Path;

use anyhow::Result;
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::cgroup::destroy_tree;
use crate::mounts::{bpffs_mount, cgroup2_mount};
use crate::netns::{NETNS_DIR, remove_netns_mount};

/// Prefix of every netns, cgroup and temporary directory the test bed creates.
pub const PREFIX: &str = "smt-";

/// What [`sweep_stale`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub netns: Vec<String>,
    pub cgroups: Vec<String>,
    pub dirs: Vec<String>,
    pub pins: Vec<String>,
}

/// The owning pid encoded in a resource name, if the name is ours.
fn owner(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

fn is_stale(name: &str) -> bool {
    owner(name).is_some_and(|pid| kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH))
}

/// Names of stale entries in `dir`.
fn stale_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_stale(n))
        .collect()
}

/// Removes namespaces, cgroups, temporary directories and BPF pin directories of test beds
/// whose process is gone.
/// Beds of live processes are never touched, so this is safe while other tests run.
pub fn sweep_stale() -> Result<Swept> {
    let mut swept = Swept::default();
    // Processes first (they pin namespaces), then namespaces, then files.
    let cg_root = cgroup2_mount()?;
    for name in stale_in(cg_root) {
        destroy_tree(&cg_root.join(&name))?;
        swept.cgroups.push(name);
    }
    for name in stale_in(Path::new(NETNS_DIR)) {
        remove_netns_mount(&Path::new(NETNS_DIR).join(&name))?;
        swept.netns.push(name);
    }
    let tmp = std::env::temp_dir();
    for name in stale_in(&tmp) {
        remove_dir(&tmp.join(&name))?;
        swept.dirs.push(name);
    }
    // Pins keep programs attached and maps alive after the agent died.
    let bpffs = bpffs_mount()?;
    for name in stale_in(bpffs) {
        remove_dir(&bpffs.join(&name))?;
        swept.pins.push(name);
    }
    Ok(swept)
}

/// Removes a directory tree; a missing one is not an error.
pub(crate) fn remove_dir(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::from(e).context(format!("rm -r {}", path.display())))
        }
        _ => Ok(()),
    }
}
