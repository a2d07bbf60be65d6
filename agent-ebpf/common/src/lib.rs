//! Keys and values of sockmesh's BPF maps, shared by the eBPF programs and the agent.
//!
//! Every type is `#[repr(C)]` with explicit padding so that the kernel and user space agree on the
//! layout and `bpftool map dump` shows named fields. IP addresses are byte arrays in network order;
//! IPv4 is stored as IPv4-mapped IPv6 (`::ffff:a.b.c.d`) so one key type serves both families.
//! Ports are in host byte order.
#![no_std]

/// Layout version of the maps below; pins live under `<pin-dir>/v<MAP_LAYOUT_VERSION>/`.
pub const MAP_LAYOUT_VERSION: u32 = 1;

/// Names of the pinned maps (file names under the pin directory).
pub mod map_names {
    pub const WORKLOADS: &str = "WORKLOADS";
    pub const POD_ADDRS: &str = "POD_ADDRS";
    pub const EXCLUDED_PORTS: &str = "EXCLUDED_PORTS";
    pub const PENDING: &str = "PENDING";
    pub const CONNS: &str = "CONNS";
    pub const INBOUND_LISTENERS: &str = "INBOUND_LISTENERS";
    pub const STATS: &str = "STATS";
}

/// Capacity of the identity maps. They are plain hash maps: eviction would silently un-mesh a pod.
pub const MAX_WORKLOAD_CGROUPS: u32 = 65_536;
/// Capacity of the per-pod address map (several addresses per pod: IPv4 and IPv6).
pub const MAX_POD_ADDRS: u32 = 16_384;
/// Capacity of the per-connection maps (bounded LRU: a lost entry fails that one connection closed).
pub const MAX_CONNS: u32 = 262_144;

/// `WORKLOADS` value, keyed by cgroup id (the inode number of the cgroup2 directory).
///
/// A pod has one cgroup per container; every one of them maps to the same `pod_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Agent-assigned pod number, stable while the pod is enrolled.
    pub pod_id: u32,
    /// Port of the pod's outbound listener on loopback inside the pod's network namespace.
    pub outbound_port: u16,
    pub _pad: u16,
}

/// An IP address as IPv4-mapped IPv6 bytes, network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Addr {
    pub ip: [u8; 16],
}

/// `POD_ADDRS` value, keyed by [`Addr`]: an address of an enrolled pod, for inbound steering.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodAddr {
    pub pod_id: u32,
    pub _pad: u32,
}

/// `EXCLUDED_PORTS` key: a destination port that capture leaves alone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub port: u16,
    /// [`DIRECTION_OUTBOUND`] or [`DIRECTION_INBOUND`].
    pub direction: u16,
}

pub const DIRECTION_OUTBOUND: u16 = 1;
pub const DIRECTION_INBOUND: u16 = 2;

/// `PENDING` value (keyed by socket cookie) and `CONNS` value: where the application meant to connect.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrigDst {
    /// cgroup id of the process that called `connect()`.
    pub cgroup_id: u64,
    pub ip: [u8; 16],
    pub port: u16,
    /// `AF_INET` (2) or `AF_INET6` (10): the family of the application's socket.
    pub family: u16,
    pub _pad: u32,
}

/// `CONNS` key: a redirected client socket as the proxy sees its peer on accept.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// Cookie of the pod's network namespace (loopback tuples are only unique per namespace).
    pub netns_cookie: u64,
    /// Client address (the application's socket), IPv4-mapped for IPv4.
    pub ip: [u8; 16],
    pub port: u16,
    pub _pad: [u8; 6],
}

/// Indexes of the per-CPU `STATS` counters.
pub mod stat {
    pub const CONNECT_REDIRECTED: u32 = 0;
    pub const CONNECT_PASSED: u32 = 1;
    pub const SOCKOPS_PUBLISHED: u32 = 2;
    pub const SOCKOPS_CLOSED: u32 = 3;
    pub const LOOKUP_STEERED: u32 = 4;
    pub const LOOKUP_DROPPED_NO_PROXY: u32 = 5;
    pub const LOOKUP_PASSED: u32 = 6;
    pub const COUNT: u32 = 7;
    /// Names in index order, for the agent's metrics and CLI.
    pub const NAMES: [&str; COUNT as usize] = [
        "connect_redirected",
        "connect_passed",
        "sockops_published",
        "sockops_closed",
        "lookup_steered",
        "lookup_dropped_no_proxy",
        "lookup_passed",
    ];
}

/// IPv4-mapped IPv6 form of an IPv4 address given in network byte order as 4 bytes.
pub const fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// True for `::ffff:a.b.c.d`.
pub fn is_v4_mapped(ip: &[u8; 16]) -> bool {
    ip[..10].iter().all(|b| *b == 0) && ip[10] == 0xff && ip[11] == 0xff
}

/// True for 127.0.0.0/8 (plain or mapped) and `::1`.
pub fn is_loopback(ip: &[u8; 16]) -> bool {
    if is_v4_mapped(ip) {
        return ip[12] == 127;
    }
    ip[..15].iter().all(|b| *b == 0) && ip[15] == 1
}

#[cfg(feature = "user")]
mod pod_impls {
    use super::*;
    // SAFETY: all types are repr(C), Copy, and have explicit padding with no implicit holes.
    unsafe impl aya::Pod for Workload {}
    unsafe impl aya::Pod for Addr {}
    unsafe impl aya::Pod for PodAddr {}
    unsafe impl aya::Pod for PortKey {}
    unsafe impl aya::Pod for OrigDst {}
    unsafe impl aya::Pod for ConnKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection_covers_both_families() {
        assert!(is_loopback(&v4_mapped([127, 0, 0, 1])));
        assert!(is_loopback(&v4_mapped([127, 9, 9, 9])));
        assert!(!is_loopback(&v4_mapped([10, 0, 0, 1])));
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert!(is_loopback(&v6));
        v6[0] = 0xfd;
        assert!(!is_loopback(&v6));
    }

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(core::mem::size_of::<OrigDst>(), 32);
        assert_eq!(core::mem::size_of::<ConnKey>(), 32);
        assert_eq!(core::mem::size_of::<Workload>(), 8);
        assert_eq!(core::mem::size_of::<PortKey>(), 4);
    }
}
