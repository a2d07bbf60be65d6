//! Where sockmesh pins its maps and links in bpffs.
use std::path::{Path, PathBuf};

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
