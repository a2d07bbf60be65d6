//! The maps shared with the agent. Keys and values are the `#[repr(C)]` types of `sockmesh-common`;
//! the agent pins every map under `<pin-dir>/v<layout>/<NAME>` so `bpftool map dump pinned` reads them.
use aya_ebpf::{
    btf_maps::{HashMap, LruHashMap, PerCpuArray, SockHash},
    macros::btf_map,
};
use sockmesh_common::{
    Addr, ConnKey, MAX_CONNS, MAX_POD_ADDRS, MAX_WORKLOAD_CGROUPS, OrigDst, PodAddr, PortKey,
    Workload, stat,
};

/// cgroup id (u64) -> enrolled workload. Plain hash: an enrolled pod must never be evicted.
#[btf_map]
pub static WORKLOADS: HashMap<u64, Workload, { MAX_WORKLOAD_CGROUPS as usize }> = HashMap::new();

/// Address of an enrolled pod -> pod. sk_lookup steers only connections for these addresses.
#[btf_map]
pub static POD_ADDRS: HashMap<Addr, PodAddr, { MAX_POD_ADDRS as usize }> = HashMap::new();

/// Destination ports (per direction) that capture leaves alone. Value unused (1).
#[btf_map]
pub static EXCLUDED_PORTS: HashMap<PortKey, u8, 1024> = HashMap::new();

/// Socket cookie of a redirected client socket -> original destination, between connect() and
/// ESTABLISHED. Bounded LRU: a connect that never completes must not leak an entry.
#[btf_map]
pub static PENDING: LruHashMap<u64, OrigDst, { MAX_CONNS as usize }> = LruHashMap::new();

/// (pod netns cookie, client address, client port) -> original destination, from ESTABLISHED until
/// the client socket closes. The proxy looks it up after accept().
#[btf_map]
pub static CONNS: LruHashMap<ConnKey, OrigDst, { MAX_CONNS as usize }> = LruHashMap::new();

/// Pod address -> the proxy's inbound listener in that pod's network namespace.
#[btf_map]
pub static INBOUND_LISTENERS: SockHash<Addr, { MAX_POD_ADDRS as usize }> = SockHash::new();

/// Per-CPU event counters, indexed by `sockmesh_common::stat`.
#[btf_map]
pub static STATS: PerCpuArray<u64, { stat::COUNT as usize }> = PerCpuArray::new();

/// Counts one event; a missing slot is impossible (fixed-size array) and ignored.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}

/// True when `port` is excluded from capture in `direction`.
#[inline(always)]
pub fn port_excluded(port: u16, direction: u16) -> bool {
    EXCLUDED_PORTS
        .get_ptr(PortKey { port, direction })
        .is_some()
}
