//! Reports new pod and container cgroups under kubepods the moment they are created (inotify),
//! so a container is enrolled before its process can connect instead of when the API says so.
//!
//! # The remaining window
//!
//! The runtime creates a container's cgroup (`mkdir`), then moves the container's first process
//! into it and execs the workload. Enrollment of that cgroup id is one map update after the
//! inotify event reaches the agent: typically tens to a few hundred microseconds, while the
//! runtime's create-to-exec path (runc/crun: namespaces, mounts, seccomp, exec) takes milliseconds.
//! So a container's first `connect` normally already finds its cgroup enrolled, but nothing
//! orders the two: on a loaded node the agent can be descheduled long enough for the workload to
//! win the race, and its first connections then go direct.
//!
//! The window closes for containers of a pod the agent already knows: the pod cgroup
//! ([`CgroupEvent::Pod`]) appears before the sandbox and every container, so a pod that is in the
//! mesh can be prepared (netns, listeners) then, leaving only the cgroup-id insert per container.
//! Processes of a container can only run in cgroups below the pod cgroup, so enrolling the pod
//! cgroup id itself covers nothing (eBPF sees the leaf cgroup); the per-container insert stays.
use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
};

use futures::StreamExt as _;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    cgroup_layout::{ContainerName, parse_container, parse_pod_uid},
    discovery::Layout,
};

/// A cgroup the kubelet or the runtime just created; paths relative to the cgroup2 mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupEvent {
    /// A pod's cgroup, created before any of its containers.
    Pod { uid: String, dir: PathBuf },
    /// A container's cgroup inside a pod's cgroup (conmon scopes are never reported).
    Container {
        uid: String,
        path: PathBuf,
        name: ContainerName,
    },
}

/// What a watched directory holds.
#[derive(Clone, Debug)]
enum Role {
    /// kubepods or a QoS level: its children are QoS levels or pods.
    Parent,
    /// A pod's cgroup: its children are containers.
    Pod(String),
}

struct Tree {
    mount: PathBuf,
    watches: Watches,
    dirs: HashMap<WatchDescriptor, (PathBuf, Role)>,
    seen: HashSet<PathBuf>,
    events: mpsc::UnboundedSender<CgroupEvent>,
}

/// Starts watching; existing pod and container cgroups are reported first. The watch stops when
/// the receiver is dropped.
pub fn watch(layout: &Layout) -> std::io::Result<mpsc::UnboundedReceiver<CgroupEvent>> {
    let inotify = Inotify::init()?;
    let stream = inotify.into_event_stream(vec![0u8; 64 * 1024])?;
    let (events, rx) = mpsc::unbounded_channel();
    let kubepods = layout
        .kubepods()
        .strip_prefix(&layout.mount)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut tree = Tree {
        mount: layout.mount.clone(),
        watches: stream.watches(),
        dirs: HashMap::new(),
        seen: HashSet::new(),
        events,
    };
    tree.add(&kubepods, Role::Parent)?;
    tokio::spawn(async move {
        let mut stream = stream;
        while let Some(event) = stream.next().await {
            if tree.events.is_closed() {
                break;
            }
            match event {
                Ok(e) if e.mask.contains(EventMask::Q_OVERFLOW) => tree.rescan(),
                Ok(e) if e.mask.contains(EventMask::IGNORED) => tree.forget(&e.wd),
                Ok(e) if e.mask.contains(EventMask::CREATE | EventMask::ISDIR) => {
                    if let Some(name) = e.name {
                        tree.created(&e.wd, &name);
                    }
                }
                Ok(e) if e.mask.contains(EventMask::DELETE | EventMask::ISDIR) => {
                    if let (Some(name), Some((dir, _))) = (e.name, tree.dirs.get(&e.wd)) {
                        let gone = dir.join(name);
                        tree.seen.remove(&gone);
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    warn!(error = %err, "cgroup watch failed");
                    break;
                }
            }
        }
    });
    Ok(rx)
}

impl Tree {
    /// Watches `dir` first and lists it second, so a child created in between is seen either way.
    fn add(&mut self, dir: &Path, role: Role) -> std::io::Result<()> {
        let mask = WatchMask::CREATE | WatchMask::DELETE | WatchMask::ONLYDIR;
        let wd = self.watches.add(self.mount.join(dir), mask)?;
        self.dirs.insert(wd, (dir.to_path_buf(), role.clone()));
        self.scan(dir, &role);
        Ok(())
    }

    fn scan(&mut self, dir: &Path, role: &Role) {
        let Ok(entries) = fs::read_dir(self.mount.join(dir)) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                self.child(dir, role, &entry.file_name());
            }
        }
    }

    fn created(&mut self, wd: &WatchDescriptor, name: &OsStr) {
        if let Some((dir, role)) = self.dirs.get(wd).cloned() {
            self.child(&dir, &role, name);
        }
    }

    fn child(&mut self, dir: &Path, role: &Role, name: &OsStr) {
        let path = dir.join(name);
        let Some(name) = name.to_str() else { return };
        if self.seen.contains(&path) {
            return;
        }
        let result = match role {
            Role::Pod(uid) => {
                if let Some(name) = parse_container(name) {
                    self.seen.insert(path.clone());
                    let uid = uid.clone();
                    let _ = self.events.send(CgroupEvent::Container { uid, path, name });
                }
                return;
            }
            Role::Parent => {
                self.seen.insert(path.clone());
                match parse_pod_uid(name) {
                    Some(uid) => {
                        let event = CgroupEvent::Pod {
                            uid: uid.clone(),
                            dir: path.clone(),
                        };
                        let _ = self.events.send(event);
                        self.add(&path, Role::Pod(uid))
                    }
                    None => self.add(&path, Role::Parent),
                }
            }
        };
        if let Err(err) = result {
            // Removed again before we could watch it: nothing to enroll.
            debug!(path = %path.display(), error = %err, "cgroup not watched");
            self.seen.remove(&path);
        }
    }

    fn forget(&mut self, wd: &WatchDescriptor) {
        if let Some((dir, _)) = self.dirs.remove(wd) {
            self.seen.retain(|p| !p.starts_with(&dir));
        }
    }

    /// After an event queue overflow: report whatever appeared meanwhile.
    fn rescan(&mut self) {
        warn!("inotify queue overflowed; rescanning kubepods");
        let dirs: Vec<(PathBuf, Role)> = self.dirs.values().cloned().collect();
        for (dir, role) in dirs {
            self.scan(&dir, &role);
        }
    }
}
