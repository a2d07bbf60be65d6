//! Finding a pod's container cgroups and network namespace on this node from its UID and QoS
//! class, the way the kubelet laid them out, so the API never has to tell us (it cannot).
use std::{
    fs,
    path::{Path, PathBuf},
};

use super::cgroup_layout::{ContainerName, Driver, Qos, parse_container};

/// Where the kubelet keeps pod cgroups on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The cgroup2 mount.
    pub mount: PathBuf,
    /// The kubelet's `--cgroup-root`, relative to the mount (empty for the default `/`).
    pub root: PathBuf,
    pub driver: Driver,
}

/// One pod's cgroups, paths relative to the cgroup2 mount as [`crate::workload::PodSpec`] wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCgroups {
    pub dir: PathBuf,
    pub containers: Vec<ContainerCgroup>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCgroup {
    pub path: PathBuf,
    pub name: ContainerName,
}

impl Layout {
    /// Detects the driver from which kubepods cgroup exists under `mount/root`; `None` until the
    /// kubelet has created it.
    pub fn detect(mount: &Path, root: &Path) -> Option<Layout> {
        let base = mount.join(root);
        [Driver::Systemd, Driver::Cgroupfs]
            .into_iter()
            .find(|d| base.join(d.kubepods_dir()).is_dir())
            .map(|driver| Layout {
                mount: mount.to_path_buf(),
                root: root.to_path_buf(),
                driver,
            })
    }

    /// The kubepods cgroup, absolute.
    pub fn kubepods(&self) -> PathBuf {
        self.mount.join(&self.root).join(self.driver.kubepods_dir())
    }

    /// The pod's cgroup and the container cgroups in it, sorted by path; `None` while the kubelet
    /// has not created the pod cgroup.
    pub fn pod(&self, uid: &str, qos: Qos) -> Option<PodCgroups> {
        let dir = self.root.join(self.driver.pod_dir(uid, qos));
        let entries = fs::read_dir(self.mount.join(&dir)).ok()?;
        let mut containers: Vec<ContainerCgroup> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name = parse_container(e.file_name().to_str()?)?;
                Some(ContainerCgroup {
                    path: dir.join(e.file_name()),
                    name,
                })
            })
            .collect();
        containers.sort_by(|a, b| a.path.cmp(&b.path));
        Some(PodCgroups { dir, containers })
    }
}

impl PodCgroups {
    /// The pod's network namespace as `/proc/<pid>/ns/net` of one of its processes: every process
    /// of a pod shares it. The sandbox's `pause` process is preferred because it lives as long as
    /// the pod, so the path stays the same across reconciles; otherwise the lowest pid. `None`
    /// while no container has a process.
    pub fn netns(&self, mount: &Path) -> Option<PathBuf> {
        let pids: Vec<u32> = self
            .containers
            .iter()
            .flat_map(|c| procs(&mount.join(&c.path)))
            .collect();
        let pause = pids.iter().copied().filter(|&p| is_pause(p)).min();
        pause
            .or_else(|| pids.iter().copied().min())
            .map(|pid| PathBuf::from(format!("/proc/{pid}/ns/net")))
    }
}

fn procs(cgroup: &Path) -> Vec<u32> {
    fs::read_to_string(cgroup.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn is_pause(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "pause")
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command};

    use super::*;
    use crate::kube::cgroup_layout::Runtime;

    const UID: &str = "7b1f2a8c-3d4e-4f50-8a6b-9c0d1e2f3a4b";

    fn id(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    /// A kubelet-like tree in a temp dir; `cgroup.procs` is a plain file here.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            let dir = std::env::temp_dir()
                .join(format!("sockmesh-discovery-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }

        fn mkdir(&self, rel: &Path, pids: &[u32]) {
            let d = self.0.join(rel);
            fs::create_dir_all(&d).unwrap();
            let procs: String = pids.iter().map(|p| format!("{p}\n")).collect();
            fs::write(d.join("cgroup.procs"), procs).unwrap();
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn scope(driver: Driver, runtime: Runtime, id: &str) -> String {
        match (driver, runtime) {
            (Driver::Systemd, Runtime::Containerd) => format!("cri-containerd-{id}.scope"),
            (Driver::Systemd, Runtime::CriO) => format!("crio-{id}.scope"),
            (Driver::Systemd, Runtime::Docker) => format!("docker-{id}.scope"),
            (Driver::Cgroupfs, Runtime::CriO) => format!("crio-{id}"),
            (Driver::Cgroupfs, _) => id.to_owned(),
        }
    }

    #[test]
    fn finds_containers_for_every_driver_runtime_and_qos() {
        let me = std::process::id();
        for driver in [Driver::Systemd, Driver::Cgroupfs] {
            for runtime in [Runtime::Containerd, Runtime::CriO] {
                for qos in [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort] {
                    let tree = Tree::new(&format!("{driver:?}-{runtime}-{qos:?}"));
                    let root = Path::new("kubelet.slice");
                    let pod = root.join(driver.pod_dir(UID, qos));
                    tree.mkdir(&pod, &[]);
                    tree.mkdir(&pod.join(scope(driver, runtime, &id(1))), &[]);
                    tree.mkdir(&pod.join(scope(driver, runtime, &id(2))), &[me]);
                    if runtime == Runtime::CriO {
                        let conmon =
                            scope(driver, runtime, &id(3)).replace("crio-", "crio-conmon-");
                        tree.mkdir(&pod.join(conmon), &[1]);
                    }
                    let layout = Layout::detect(&tree.0, root).expect("layout");
                    assert_eq!(layout.driver, driver);
                    let found = layout.pod(UID, qos).expect("pod cgroup");
                    assert_eq!(found.dir, pod);
                    let ids: Vec<&str> = found.containers.iter().map(|c| &*c.name.id).collect();
                    assert_eq!(ids, [id(1), id(2)], "{driver:?} {runtime} {qos:?}");
                    assert!(found.containers.iter().all(|c| c.path.starts_with(&pod)));
                    assert_eq!(
                        found.netns(&tree.0),
                        Some(PathBuf::from(format!("/proc/{me}/ns/net")))
                    );
                }
            }
        }
    }

    #[test]
    fn later_containers_are_found_and_missing_pods_are_none() {
        let tree = Tree::new("later");
        let root = Path::new("");
        let pod = Driver::Systemd.pod_dir(UID, Qos::Burstable);
        tree.mkdir(Path::new("kubepods.slice"), &[]);
        let layout = Layout::detect(&tree.0, root).unwrap();
        assert_eq!(layout.pod(UID, Qos::Burstable), None);
        tree.mkdir(&pod, &[]);
        let empty = layout.pod(UID, Qos::Burstable).unwrap();
        assert!(empty.containers.is_empty());
        assert_eq!(empty.netns(&tree.0), None);
        tree.mkdir(
            &pod.join(scope(Driver::Systemd, Runtime::Containerd, &id(1))),
            &[],
        );
        assert_eq!(layout.pod(UID, Qos::Burstable).unwrap().containers.len(), 1);
        tree.mkdir(
            &pod.join(scope(Driver::Systemd, Runtime::Containerd, &id(2))),
            &[],
        );
        assert_eq!(layout.pod(UID, Qos::Burstable).unwrap().containers.len(), 2);
    }

    #[test]
    fn no_kubepods_means_no_layout() {
        let tree = Tree::new("none");
        assert_eq!(Layout::detect(&tree.0, Path::new("")), None);
    }

    /// A process whose comm is `pause`, like the sandbox container's.
    struct Pause(Child, PathBuf);

    impl Drop for Pause {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = fs::remove_file(&self.1);
        }
    }

    #[test]
    fn prefers_the_pause_process() {
        let tree = Tree::new("pause");
        let bin = tree.0.join("pause");
        fs::copy("/bin/sleep", &bin).unwrap();
        let child = Command::new(&bin).arg("30").spawn().unwrap();
        let pause = Pause(child, bin);
        let pid = pause.0.id();
        let pod = Driver::Cgroupfs.pod_dir(UID, Qos::BestEffort);
        tree.mkdir(&pod.join(id(1)), &[1]);
        tree.mkdir(&pod.join(id(2)), &[pid]);
        let layout = Layout::detect(&tree.0, Path::new("")).unwrap();
        let found = layout.pod(UID, Qos::BestEffort).unwrap();
        let want = PathBuf::from(format!("/proc/{pid}/ns/net"));
        for _ in 0..100 {
            if found.netns(&tree.0) == Some(want.clone()) {
                return;
            }
            // Until exec completes the child's comm is still the test binary's.
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("pause process not preferred: {:?}", found.netns(&tree.0));
    }
}
