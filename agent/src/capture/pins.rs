//! Where sockmesh pins its maps and links in bpffs, and how a link is pinned over an earlier
//! agent's.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aya::programs::links::{FdLink, PinnedLink};
use tracing::info;

use sockmesh_common::MAP_LAYOUT_VERSION;

/// `<pin-dir>/v<layout>/` holds the maps, `<pin-dir>/v<layout>/links/` the links.
#[derive(Clone, Debug)]
pub struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    pub fn new(pin_dir: &Path) -> Self {
        Self {
            root: pin_dir.join(format!("v{MAP_LAYOUT_VERSION}")),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, name: &str) -> PathBuf {
        self.links().join(name)
    }

    /// The sk_lookup link of the network namespace with this inode.
    pub fn netns_link(&self, netns_inode: u64) -> PathBuf {
        self.links().join(format!("sk_lookup_netns_{netns_inode}"))
    }

    /// The sock_ops link of the pod cgroup with this id.
    pub fn pod_cgroup_link(&self, cgroup_id: u64) -> PathBuf {
        self.links().join(format!("sock_ops_cgroup_{cgroup_id}"))
    }

    /// Id of a pod cgroup whose sock_ops link is pinned at `name`, if `name` is such a pin.
    pub fn pod_cgroup_of(name: &str) -> Option<u64> {
        name.strip_prefix("sock_ops_cgroup_")?.parse().ok()
    }

    /// Inode of a namespace whose sk_lookup link is pinned at `name`, if `name` is such a pin.
    pub fn netns_inode_of(name: &str) -> Option<u64> {
        name.strip_prefix("sk_lookup_netns_")?.parse().ok()
    }
}

/// Pins `link` at `path`; a link already pinned there (an earlier agent's) is released only after
/// the new one is attached, so there is no moment without capture.
pub fn pin_replacing(link: FdLink, path: &Path) -> anyhow::Result<()> {
    let old = match PinnedLink::from_pin(path) {
        Ok(pinned) => Some(
            pinned
                .unpin()
                .with_context(|| format!("unpinning {}", path.display()))?,
        ),
        Err(_) => None,
    };
    link.pin(path)
        .with_context(|| format!("pinning {}", path.display()))?;
    if old.is_some() {
        info!(pin = %path.display(), "took over pinned link");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_link_names_round_trip() {
        let p = PinLayout::new(Path::new("/sys/fs/bpf/sockmesh"));
        let link = p.netns_link(4026532290);
        assert_eq!(
            link,
            Path::new("/sys/fs/bpf/sockmesh/v1/links/sk_lookup_netns_4026532290")
        );
        let name = link.file_name().unwrap().to_str().unwrap();
        assert_eq!(PinLayout::netns_inode_of(name), Some(4026532290));
        assert_eq!(PinLayout::netns_inode_of("connect4"), None);
    }
}
