//! Loading the programs, pinning the maps, attaching (or taking over) the links.
use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, SockHash},
    programs::{CgroupAttachMode, CgroupSockAddr, SkLookup, SockOps, links::FdLink},
};
use sockmesh_common::{
    Addr, ConnKey, DIRECTION_INBOUND, DIRECTION_OUTBOUND, OrigDst, PodAddr, PortKey, Workload,
    map_names, stat,
};
use tracing::{info, warn};

use super::{OriginalDst, PinLayout, pins::pin_replacing, sk_lookup};
use crate::netns::Netns;

/// What one agent instance captures: its cgroup subtree and pin directory scope everything.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    pub pin_dir: PathBuf,
    /// Absolute path of the cgroup the connect/sock_ops programs attach to.
    pub cgroup_root: PathBuf,
    /// Its level in the cgroup2 hierarchy (root = 0): connect4/6 look for enrolled pod cgroups
    /// among the caller's ancestors below it.
    pub cgroup_root_level: u32,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_inbound_ports: Vec<u16>,
}

/// The loaded programs and the maps the agent writes (control plane) or reads (data path).
pub struct Capture {
    layout: PinLayout,
    ebpf: Mutex<Ebpf>,
    workloads: Mutex<HashMap<MapData, u64, Workload>>,
    pod_addrs: Mutex<HashMap<MapData, Addr, PodAddr>>,
    listeners: Mutex<SockHash<MapData, Addr>>,
    conns: HashMap<MapData, ConnKey, OrigDst>,
    stats: PerCpuArray<MapData, u64>,
}

/// Cgroup programs: (program name in the object, pinned link name).
/// Attached once at the cgroup root: they must see every connect to decide.
const CGROUP_PROGRAMS: [&str; 2] = ["connect4", "connect6"];
/// Attached per enrolled pod cgroup: only the pods' own sockets need it, and at the root it would
/// also run for every operation of every proxy socket.
const SOCK_OPS_PROGRAM: &str = "sock_ops_cb";
const SK_LOOKUP_PROGRAM: &str = "sk_lookup_steer";
const PINNED_MAPS: [&str; 7] = [
    map_names::WORKLOADS,
    map_names::POD_ADDRS,
    map_names::EXCLUDED_PORTS,
    map_names::PENDING,
    map_names::CONNS,
    map_names::INBOUND_LISTENERS,
    map_names::STATS,
];

impl Capture {
    /// Loads the programs with maps pinned under the layout, and attaches the cgroup programs at
    /// `cgroup_root`, taking over links an earlier agent pinned (attach new, swap the pin, release
    /// the old link: capture never lapses and never runs twice once start-up is done).
    pub fn load(config: &CaptureConfig) -> anyhow::Result<Self> {
        let layout = PinLayout::new(&config.pin_dir);
        fs::create_dir_all(layout.links())
            .with_context(|| format!("creating pin directory {}", layout.links().display()))?;
        let mut loader = EbpfLoader::new();
        loader.override_global("CGROUP_ROOT_LEVEL", &config.cgroup_root_level, true);
        for name in PINNED_MAPS {
            loader.map_pin_path(name, layout.map(name));
        }
        let mut ebpf = loader
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/sockmesh"
            )))
            .context("loading the eBPF object")?;

        let cgroup = File::open(&config.cgroup_root)
            .with_context(|| format!("opening cgroup {}", config.cgroup_root.display()))?;
        for name in CGROUP_PROGRAMS {
            attach_cgroup_program(&mut ebpf, name, &cgroup, &layout)
                .with_context(|| format!("attaching {name} to {}", config.cgroup_root.display()))?;
        }
        // An earlier layout attached sock_ops at the root; per-pod links replace it.
        let _ = fs::remove_file(layout.link(SOCK_OPS_PROGRAM));
        let sock_ops: &mut SockOps = program(&mut ebpf, SOCK_OPS_PROGRAM)?;
        sock_ops.load().context("loading sock_ops")?;
        let sk_lookup: &mut SkLookup = program(&mut ebpf, SK_LOOKUP_PROGRAM)?;
        sk_lookup.load().context("loading sk_lookup")?;

        let mut excluded: HashMap<MapData, PortKey, u8> =
            take(&mut ebpf, map_names::EXCLUDED_PORTS)?;
        sync_excluded_ports(&mut excluded, config)?;
        let capture = Self {
            workloads: Mutex::new(take(&mut ebpf, map_names::WORKLOADS)?),
            pod_addrs: Mutex::new(take(&mut ebpf, map_names::POD_ADDRS)?),
            listeners: Mutex::new(take(&mut ebpf, map_names::INBOUND_LISTENERS)?),
            conns: take(&mut ebpf, map_names::CONNS)?,
            stats: take(&mut ebpf, map_names::STATS)?,
            ebpf: Mutex::new(ebpf),
            layout,
        };
        info!(pins = %capture.layout.root().display(), cgroup = %config.cgroup_root.display(), "capture programs attached");
        Ok(capture)
    }

    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    /// Original destination and cgroup of a redirected connection, by the client socket's key.
    pub fn original_dst(&self, key: &ConnKey) -> Option<OriginalDst> {
        self.conns.get(key, 0).ok().map(OriginalDst::from)
    }

    pub fn insert_workload(&self, cgroup_id: u64, workload: Workload) -> anyhow::Result<()> {
        lock(&self.workloads)
            .insert(cgroup_id, workload, 0)
            .with_context(|| format!("WORKLOADS insert cgroup {cgroup_id}"))
    }

    pub fn remove_workload(&self, cgroup_id: u64) {
        if let Err(e) = lock(&self.workloads).remove(&cgroup_id) {
            warn!(cgroup_id, error = %e, "WORKLOADS remove failed");
        }
    }

    /// cgroup ids currently in `WORKLOADS` (including entries left by an earlier agent).
    pub fn workload_cgroups(&self) -> Vec<u64> {
        lock(&self.workloads)
            .keys()
            .filter_map(Result::ok)
            .collect()
    }

    /// Registers a pod address and the inbound listener (in the pod's netns) that serves it.
    pub fn insert_pod_addr(
        &self,
        addr: Addr,
        pod_id: u32,
        listener: &impl std::os::fd::AsRawFd,
    ) -> anyhow::Result<()> {
        lock(&self.listeners)
            .insert(addr, listener.as_raw_fd(), 0)
            .with_context(|| format!("INBOUND_LISTENERS insert {:?}", addr.ip))?;
        lock(&self.pod_addrs)
            .insert(addr, PodAddr { pod_id, _pad: 0 }, 0)
            .with_context(|| format!("POD_ADDRS insert {:?}", addr.ip))
    }

    pub fn remove_pod_addr(&self, addr: &Addr) {
        let _ = lock(&self.pod_addrs).remove(addr);
        let _ = lock(&self.listeners).remove(addr);
    }

    /// Pod addresses currently in `POD_ADDRS` (including entries left by an earlier agent).
    pub fn pod_addrs(&self) -> Vec<Addr> {
        lock(&self.pod_addrs)
            .keys()
            .filter_map(Result::ok)
            .collect()
    }

    /// Links the sk_lookup program into a pod's network namespace (replacing an earlier link).
    pub fn link_netns(&self, netns: &Netns) -> anyhow::Result<()> {
        let mut ebpf = lock(&self.ebpf);
        let prog: &mut SkLookup = program(&mut ebpf, SK_LOOKUP_PROGRAM)?;
        sk_lookup::link(prog, netns, &self.layout)
    }

    /// Attaches sock_ops to a pod's cgroup (its containers below inherit it), replacing an earlier
    /// link for that cgroup.
    pub fn link_pod_cgroup(&self, cgroup: &Path, cgroup_id: u64) -> anyhow::Result<()> {
        let dir =
            File::open(cgroup).with_context(|| format!("opening cgroup {}", cgroup.display()))?;
        let mut ebpf = lock(&self.ebpf);
        let prog: &mut SockOps = program(&mut ebpf, SOCK_OPS_PROGRAM)?;
        let id = prog.attach(&dir, CgroupAttachMode::Single)?;
        let link: FdLink = prog.take_link(id)?.try_into()?;
        pin_replacing(link, &self.layout.pod_cgroup_link(cgroup_id))
    }

    pub fn unlink_pod_cgroup(&self, cgroup_id: u64) {
        let path = self.layout.pod_cgroup_link(cgroup_id);
        if let Err(e) = fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(pin = %path.display(), error = %e, "removing sock_ops link pin failed");
        }
    }

    /// Ids of pod cgroups with a pinned sock_ops link.
    pub fn linked_pod_cgroups(&self) -> Vec<u64> {
        let Ok(dir) = fs::read_dir(self.layout.links()) else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| PinLayout::pod_cgroup_of(e.file_name().to_str()?))
            .collect()
    }

    pub fn unlink_netns(&self, netns_inode: u64) {
        sk_lookup::unlink(&self.layout, netns_inode);
    }

    /// Inodes of namespaces with a pinned sk_lookup link.
    pub fn linked_netns(&self) -> Vec<u64> {
        sk_lookup::linked(&self.layout)
    }

    /// Sum over CPUs of each `STATS` counter, in `sockmesh_common::stat` order.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        (0..stat::COUNT)
            .map(|i| {
                let total = self.stats.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
                (stat::NAMES[i as usize], total)
            })
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
    Ok(prog.try_into()?)
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

fn attach_cgroup_program(
    ebpf: &mut Ebpf,
    name: &str,
    cgroup: &File,
    layout: &PinLayout,
) -> anyhow::Result<()> {
    // Single mode: cgroup *links* are multi-attach anyway, and ALLOW_MULTI makes link_create fail.
    let prog: &mut CgroupSockAddr = program(ebpf, name)?;
    prog.load()?;
    let id = prog.attach(cgroup, CgroupAttachMode::Single)?;
    let link: FdLink = prog.take_link(id)?.try_into()?;
    pin_replacing(link, &layout.link(name))
}

fn sync_excluded_ports(
    map: &mut HashMap<MapData, PortKey, u8>,
    config: &CaptureConfig,
) -> anyhow::Result<()> {
    let mut wanted: Vec<PortKey> = Vec::new();
    for (ports, direction) in [
        (&config.exclude_outbound_ports, DIRECTION_OUTBOUND),
        (&config.exclude_inbound_ports, DIRECTION_INBOUND),
    ] {
        wanted.extend(ports.iter().map(|&port| PortKey { port, direction }));
    }
    let stale: Vec<PortKey> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.contains(k))
        .collect();
    for key in stale {
        map.remove(&key)?;
    }
    for key in wanted {
        map.insert(key, 1, 0)?;
    }
    Ok(())
}
