//! Removing capture: every pin goes, so the kernel detaches every program and pods go back to
//! direct traffic. `sockmesh uninstall` does it by hand on a node; the agent does it itself on
//! SIGTERM once it has seen its DaemonSet deleted (`kube::owner`), unless a newer agent has
//! already taken the pins over ([`OwnPins`]).
use std::{
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use tracing::{error, info};

use crate::capture::PinLayout;

#[derive(Debug, clap::Args)]
pub struct UninstallArgs {
    /// The pin directory the agent ran with.
    #[arg(long, default_value = "/sys/fs/bpf/sockmesh")]
    pub pin_dir: PathBuf,
}

pub fn uninstall(args: &UninstallArgs) -> anyhow::Result<()> {
    if remove_capture(&args.pin_dir)? {
        println!(
            "removed {}: programs detached, maps released",
            args.pin_dir.display()
        );
    } else {
        println!("nothing pinned at {}", args.pin_dir.display());
    }
    Ok(())
}

/// Removes `pin_dir` and everything pinned in it; false when there was nothing.
pub fn remove_capture(pin_dir: &Path) -> anyhow::Result<bool> {
    if !pin_dir.exists() {
        return Ok(false);
    }
    // bpffs allows unlinking pins and removing empty directories; remove_dir_all does both.
    std::fs::remove_dir_all(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))?;
    Ok(true)
}

/// The pinned `connect4` link as this agent pinned it. A newer agent that takes capture over
/// (rolling update, or the DaemonSet deleted and applied again) pins its own link there, which is
/// a new bpffs inode: then the pins are no longer this agent's to remove.
#[derive(Debug)]
pub struct OwnPins {
    pin_dir: PathBuf,
    link: PathBuf,
    inode: u64,
}

impl OwnPins {
    /// Call right after capture is attached.
    pub fn record(pin_dir: &Path) -> io::Result<Self> {
        let link = PinLayout::new(pin_dir).link("connect4");
        let inode = std::fs::metadata(&link)?.ino();
        Ok(Self {
            pin_dir: pin_dir.to_owned(),
            link,
            inode,
        })
    }

    /// Whether another agent has pinned its own programs since [`OwnPins::record`].
    pub fn taken_over(&self) -> bool {
        std::fs::metadata(&self.link).map_or(true, |m| m.ino() != self.inode)
    }

    /// Removes capture unless another agent has taken it over; true when removed.
    pub fn remove_unless_taken_over(&self) -> anyhow::Result<bool> {
        if self.taken_over() {
            return Ok(false);
        }
        remove_capture(&self.pin_dir)
    }
}

/// On SIGTERM after the agent saw its DaemonSet go (`reason`): removes capture, so the node's pods
/// talk directly instead of to a proxy that is about to exit; the drain that follows lets open
/// connections finish. Pins a newer agent has taken over stay.
pub fn on_removal(own: &OwnPins, reason: &str) {
    match own.remove_unless_taken_over() {
        Ok(true) => {
            info!(reason, pins = %own.pin_dir.display(), "uninstall: capture removed, pods talk directly again")
        }
        Ok(false) => info!(
            reason,
            "uninstall: a newer agent holds the pins; capture stays"
        ),
        Err(e) => {
            error!(reason, error = %format!("{e:#}"), "uninstall: removing capture failed; run `sockmesh uninstall` on this node")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_replaced_by_another_agent_are_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("pins");
        let link = PinLayout::new(&pins).link("connect4");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::fs::write(&link, "ours").unwrap();
        let own = OwnPins::record(&pins).unwrap();
        assert!(!own.taken_over());
        // A takeover: the new agent pins its link under the same name (a new inode).
        let newer = link.with_extension("new");
        std::fs::write(&newer, "theirs").unwrap();
        std::fs::rename(&newer, &link).unwrap();
        assert!(own.taken_over());
        assert!(!own.remove_unless_taken_over().unwrap());
        assert!(link.exists());

        let own = OwnPins::record(&pins).unwrap();
        assert!(own.remove_unless_taken_over().unwrap());
        assert!(!pins.exists());
        assert!(!remove_capture(&pins).unwrap());
    }
}
