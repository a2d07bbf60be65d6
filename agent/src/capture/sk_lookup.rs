//! Per-namespace sk_lookup links, pinned by the namespace's inode.
use std::fs;

use aya::programs::{SkLookup, links::FdLink};
use tracing::warn;

use super::pins::{PinLayout, pin_replacing};
use crate::netns::Netns;

/// Attaches `prog` to the namespace and pins the link, replacing a link pinned earlier for it.
///
/// A fresh link is made even when one is pinned: a pinned link may belong to a namespace that died
/// and whose inode was reused, and a fresh link is always right.
pub fn link(prog: &mut SkLookup, netns: &Netns, layout: &PinLayout) -> anyhow::Result<()> {
    let id = prog.attach(netns.file())?;
    let link: FdLink = prog.take_link(id)?.into();
    pin_replacing(link, &layout.netns_link(netns.inode()))
}

/// Removes the pinned link of a namespace; the kernel detaches it with the last reference.
pub fn unlink(layout: &PinLayout, netns_inode: u64) {
    let path = layout.netns_link(netns_inode);
    if let Err(e) = fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(pin = %path.display(), error = %e, "removing sk_lookup link pin failed");
    }
}

pub fn linked(layout: &PinLayout) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(layout.links()) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| PinLayout::netns_inode_of(e.file_name().to_str()?))
        .collect()
}
