//! Making sure the pin directory lives on a BPF filesystem.
use std::path::Path;

use anyhow::{Context as _, bail};
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use tracing::info;

/// The conventional bpffs mount point; mounted by the agent when the host has not done it.
const BPFFS: &str = "/sys/fs/bpf";

/// Ensures `pin_dir` is on bpffs, mounting bpffs at `/sys/fs/bpf` if that is where it should be.
pub fn ensure(pin_dir: &Path) -> anyhow::Result<()> {
    let existing = pin_dir
        .ancestors()
        .find(|p| p.exists())
        .context("pin directory has no existing ancestor")?;
    if on_bpffs(existing)? {
        return Ok(());
    }
    if !pin_dir.starts_with(BPFFS) {
        bail!(
            "pin directory {} is not on a BPF filesystem (mount -t bpf bpf <dir>)",
            pin_dir.display()
        );
    }
    mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mounting bpffs at {BPFFS}"))?;
    info!("mounted bpffs at {BPFFS}");
    Ok(())
}

fn on_bpffs(path: &Path) -> anyhow::Result<bool> {
    let fs = statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    Ok(fs.filesystem_type() == BPF_FS_MAGIC)
}
