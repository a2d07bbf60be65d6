//! The cgroup v2 hierarchy: where it is mounted and what a cgroup's id is.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Finds the cgroup2 mount point in `/proc/self/mountinfo`.
///
/// Hybrid hosts mount it at `/sys/fs/cgroup/unified`, unified hosts at `/sys/fs/cgroup`; never guess.
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    parse_cgroup2_mount(&info).context("no cgroup2 filesystem is mounted")
}

fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// Resolves a cgroup path given relative to the cgroup2 mount (or absolute under it).
pub fn resolve(mount: &Path, path: &Path) -> anyhow::Result<PathBuf> {
    let full = if path.starts_with(mount) {
        path.to_path_buf()
    } else {
        mount.join(path.strip_prefix("/").unwrap_or(path))
    };
    if !full.is_dir() {
        bail!("cgroup {} does not exist", full.display());
    }
    Ok(full)
}

/// The cgroup id the kernel reports (`bpf_get_current_cgroup_id`): the cgroup directory's inode.
pub fn cgroup_id(dir: &Path) -> anyhow::Result<u64> {
    Ok(fs::metadata(dir)
        .with_context(|| format!("stat cgroup {}", dir.display()))?
        .ino())
}

/// `path` (relative to the cgroup2 mount) and every cgroup below it: a pod cgroup and its
/// container cgroups. Paths that do not exist (yet) are returned as given.
pub fn with_descendants(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    let Ok(mount) = cgroup2_mount() else {
        return out;
    };
    let Ok(root) = resolve(&mount, path) else {
        return out;
    };
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let child = entry.path();
                if let Ok(rel) = child.strip_prefix(&mount) {
                    out.push(rel.to_path_buf());
                }
                stack.push(child);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let info = "25 30 0:23 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n\
                    26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n\
                    27 25 0:25 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,name=systemd\n";
        assert_eq!(
            parse_cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn no_cgroup2_is_none() {
        let info = "25 30 0:23 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro\n";
        assert_eq!(parse_cgroup2_mount(info), None);
    }

    #[test]
    fn resolve_accepts_relative_and_absolute() {
        let dir = std::env::temp_dir();
        let rel = resolve(Path::new("/"), &dir).unwrap();
        assert_eq!(rel, dir);
        assert!(resolve(Path::new("/"), Path::new("/definitely/not/here")).is_err());
    }
}
