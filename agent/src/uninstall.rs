//! `sockmesh uninstall`: remove every pin so the kernel detaches every program and pods go back to
//! direct traffic.
use std::path::PathBuf;

use anyhow::Context as _;

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// The pin directory the agent ran with.
    #[arg(long, default_value = "/sys/fs/bpf/sockmesh")]
    pub pin_dir: PathBuf,
}

pub fn uninstall(args: &UninstallArgs) -> anyhow::Result<()> {
    if !args.pin_dir.exists() {
        println!("nothing pinned at {}", args.pin_dir.display());
        return Ok(());
    }
    // bpffs allows unlinking pins and removing empty directories; remove_dir_all does both.
    std::fs::remove_dir_all(&args.pin_dir)
        .with_context(|| format!("removing {}", args.pin_dir.display()))?;
    println!(
        "removed {}: programs detached, maps released",
        args.pin_dir.display()
    );
    Ok(())
}
