//! Address plan. Each live test bed holds a "slot" (an flock on a file under /run, released by the
//! kernel even when the process dies), and the slot picks address ranges no other live bed uses,
//! so pcaps and logs of parallel tests never show the same addresses.
//!
//! Slot S, node N (1-based), pod P (1-based on its node):
//! - fabric (inter-node wire): `10.{64+S}.0.N/24`, `fd00:736d:S::N/64`
//! - node pod subnet: `10.{64+S}.N.0/24`, `fd00:736d:S:N::/64`; the node's bridge has `.1` / `::1`
//! - pod: `10.{64+S}.N.{P+1}`, `fd00:736d:S:N::{P+1}`

use std::fs::{self, File};
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Result, bail};
use nix::fcntl::{Flock, FlockArg};

const LOCK_DIR: &str = "/run/sockmesh-testbed";
const SLOTS: u8 = 128;
/// Nodes per bed and pods per node that fit in the plan.
pub(crate) const MAX_NODES: u8 = 250;
pub(crate) const MAX_PODS: u8 = 250;

/// An exclusive claim on one address slot for the lifetime of a bed.
#[derive(Debug)]
pub(crate) struct Slot {
    index: u8,
    _lock: Flock<File>,
}

impl Slot {
    /// Claims the lowest free slot.
    pub(crate) fn claim() -> Result<Slot> {
        fs::create_dir_all(LOCK_DIR)?;
        for index in 0..SLOTS {
            let file = File::create(format!("{LOCK_DIR}/slot-{index}.lock"))?;
            // flock conflicts between open file descriptions, so this also works within one process.
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                return Ok(Slot { index, _lock: lock });
            }
        }
        bail!("all {SLOTS} test bed address slots are in use")
    }

    pub(crate) fn index(&self) -> u8 {
        self.index
    }
}

/// Second octet of every IPv4 address of slot `s`.
fn v4_octet(slot: u8) -> u8 {
    64 + slot
}

/// The node's address on the inter-node fabric.
pub(crate) fn fabric_v4(slot: u8, node: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, v4_octet(slot), 0, node)
}

pub(crate) fn fabric_v6(slot: u8, node: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x736d, slot.into(), 0, 0, 0, 0, node.into())
}

/// Host `host` in node `node`'s pod subnet (host 1 is the node's bridge, the pods' gateway).
pub(crate) fn pod_v4(slot: u8, node: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, v4_octet(slot), node, host)
}

pub(crate) fn pod_v6(slot: u8, node: u8, host: u8) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x736d,
        slot.into(),
        node.into(),
        0,
        0,
        0,
        host.into(),
    )
}

/// The node's pod subnets in CIDR form (IPv4, IPv6).
pub(crate) fn pod_cidrs(slot: u8, node: u8) -> (String, String) {
    (
        format!("{}/24", pod_v4(slot, node, 0)),
        format!("{}/64", pod_v6(slot, node, 0)),
    )
}
