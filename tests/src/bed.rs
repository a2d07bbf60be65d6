//! The test bed: owns every namespace, cgroup and file of one test and removes them on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use anyhow::{Context, Result, bail};

use crate::addr::{MAX_NODES, Slot};
use crate::apiserver::ApiServer;
use crate::capture::WireCapture;
use crate::cgroup::{Cgroup, destroy_tree};
use crate::cleanup::{PREFIX, remove_dir, sweep_stale};
use crate::netns::Netns;
use crate::node::Node;
use crate::pod::Pod;
use crate::yaml;

/// State shared by the bed and its node handles.
#[derive(Debug)]
pub(crate) struct BedShared {
    pub(crate) id: String,
    pub(crate) slot: Slot,
    pub(crate) cgroup: Cgroup,
    pub(crate) workdir: PathBuf,
    pub(crate) fabric: Netns,
    /// Pods laid out as the kubelet does (`kubepods/besteffort/pod<uid>/<container id>`, with a
    /// `pause` sandbox process), for agents in `--kubernetes` mode.
    pub(crate) kubernetes: bool,
    api: OnceLock<ApiServer>,
    /// `(apiVersion, kind, namespace, name)` of what [`TestBed::publish`] put in the API.
    published: Mutex<BTreeSet<(String, String, String, String)>>,
    state: Mutex<BedState>,
}

/// Everything created so far, for cleanup and for the agent's configuration.
#[derive(Debug, Default)]
pub(crate) struct BedState {
    pub(crate) nodes: Vec<Node>,
    pub(crate) pods: Vec<Pod>,
    /// Namespace name -> labels.
    pub(crate) namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Every namespace created, in creation order (deleted in reverse).
    pub(crate) netns: Vec<Netns>,
}

impl BedShared {
    pub(crate) fn state(&self) -> MutexGuard<'_, BedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Name of a bed-owned resource: `<bed id>-<suffix>`.
    pub(crate) fn scoped_name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.id)
    }

    pub(crate) fn api(&self) -> Result<&ApiServer> {
        if let Some(api) = self.api.get() {
            return Ok(api);
        }
        let _guard = self.state();
        if let Some(api) = self.api.get() {
            return Ok(api);
        }
        let api = ApiServer::start(&self.workdir)?;
        Ok(self.api.get_or_init(|| api))
    }

    /// Creates a netns and records it for cleanup before anything else can fail.
    pub(crate) fn create_netns(&self, suffix: &str) -> Result<Netns> {
        let ns = Netns::create(&self.scoped_name(suffix))?;
        self.state().netns.push(ns.clone());
        Ok(ns)
    }
}

/// One test's world: a fabric (the inter-node wire), nodes, pods. Dropping it kills every process
/// it started and removes every namespace, cgroup and temporary file, also when the test panics
/// (then the work directory with process logs is kept and its path printed).
#[derive(Debug)]
pub struct TestBed {
    shared: Arc<BedShared>,
}

impl TestBed {
    /// Creates an empty bed. `name` (usually the test's) goes into every resource name together
    /// with the pid and a counter: `smt-<pid>-<n>-<name>`. Leftovers of dead runs are swept first.
    pub fn new(name: &str) -> Result<TestBed> {
        Self::create(name, false)
    }

    /// A bed whose nodes look like kubelet nodes to an agent in `--kubernetes` mode: pod cgroups in
    /// the kubelet's cgroupfs layout, a `pause` process holding each pod's netns, and the cluster
    /// state served by [`TestBed::api`] ([`TestBed::publish`] puts it there).
    pub fn kubernetes(name: &str) -> Result<TestBed> {
        Self::create(name, true)
    }

    fn create(name: &str, kubernetes: bool) -> Result<TestBed> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        if let Err(e) = sweep_stale() {
            eprintln!("testbed: sweeping stale resources failed: {e:#}");
        }
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(24)
            .collect();
        let seq = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{PREFIX}{}-{seq}-{clean}", std::process::id());
        let slot = Slot::claim()?;
        let workdir = std::env::temp_dir().join(&id);
        fs::create_dir_all(workdir.join("config"))?;
        let cgroup = Cgroup::create(&format!("/{id}"))?;
        let fabric = match Netns::create(&format!("{id}-fabric")) {
            Ok(ns) => ns,
            Err(e) => {
                let _ = destroy_tree(cgroup.path());
                let _ = fs::remove_dir_all(&workdir);
                return Err(e);
            }
        };
        // From here on the bed owns what exists: a failure below is cleaned up by Drop.
        let partial = TestBed {
            shared: Arc::new(BedShared {
                id,
                slot,
                cgroup,
                workdir,
                fabric,
                kubernetes,
                api: OnceLock::new(),
                published: Mutex::default(),
                state: Mutex::default(),
            }),
        };
        let fabric = &partial.shared.fabric;
        fabric.ip_batch(&["link add br0 type bridge", "link set br0 up"])?;
        Ok(partial)
    }

    /// Adds a node: a netns with a bridge for its pods, an uplink to the fabric, routes to every
    /// other node, and a cgroup subtree for the agent and the pods.
    pub fn node(&self, name: &str) -> Result<Node> {
        let index = {
            let state = self.shared.state();
            if state.nodes.iter().any(|n| n.name() == name) {
                bail!("node {name} exists");
            }
            state.nodes.len() + 1
        };
        if index > usize::from(MAX_NODES) {
            bail!("at most {MAX_NODES} nodes per bed");
        }
        let node = Node::create(&self.shared, name, index as u8)?;
        self.shared.state().nodes.push(node.clone());
        Ok(node)
    }

    /// Unique id of this bed, also the prefix of its netns names and its cgroup directory.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Cgroup holding all nodes of the bed.
    pub fn cgroup(&self) -> &Cgroup {
        &self.shared.cgroup
    }

    /// Directory for process logs and the agent configuration; removed on drop unless the test panicked.
    pub fn workdir(&self) -> &Path {
        &self.shared.workdir
    }

    /// The netns with the fabric bridge (`br0`) that links the nodes.
    pub fn fabric_netns_path(&self) -> &Path {
        self.shared.fabric.path()
    }

    pub fn nodes(&self) -> Vec<Node> {
        self.shared.state().nodes.clone()
    }

    /// Every pod of every node.
    pub fn pods(&self) -> Vec<Pod> {
        self.shared.state().pods.clone()
    }

    /// Sets a label on a Kubernetes namespace (e.g. mesh membership); takes effect on the next
    /// [`TestBed::write_config`].
    pub fn label_namespace(&self, namespace: &str, key: &str, value: &str) {
        let mut state = self.shared.state();
        let labels = state.namespaces.entry(namespace.to_owned()).or_default();
        labels.insert(key.to_owned(), value.to_owned());
    }

    /// Directory the agent gets as `--config`. Tests may add their own files (policies) to it.
    pub fn config_dir(&self) -> PathBuf {
        self.shared.workdir.join("config")
    }

    /// Writes `namespace-<ns>.yaml` for every namespace and `pod-<ns>-<name>.yaml` for every pod
    /// of every node (the agent keeps those whose `spec.nodeName` is its node) into
    /// [`TestBed::config_dir`], each file atomically, and returns the directory.
    pub fn write_config(&self) -> Result<PathBuf> {
        let dir = self.config_dir();
        let state = self.shared.state();
        for (ns, labels) in &state.namespaces {
            write_atomic(
                &dir.join(format!("namespace-{ns}.yaml")),
                &yaml::namespace(ns, labels),
            )?;
        }
        for pod in &state.pods {
            write_atomic(&dir.join(pod.yaml_file_name()), &pod.yaml())?;
        }
        Ok(dir)
    }

    /// The bed's Kubernetes API server, started on first use.
    pub fn api(&self) -> Result<&ApiServer> {
        self.shared.api()
    }

    /// Makes the API server hold what the bed holds: every namespace and pod, and every manifest
    /// in [`TestBed::config_dir`] (policies, Services) other than the files
    /// [`TestBed::write_config`] writes. Objects published before and gone now are deleted.
    pub fn publish(&self) -> Result<()> {
        let api = self.api()?;
        let mut objects = Vec::new();
        {
            let state = self.shared.state();
            for (ns, labels) in &state.namespaces {
                objects.push(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "labels": labels}}));
            }
            objects.extend(state.pods.iter().map(Pod::api_object));
        }
        let mut files: Vec<PathBuf> = fs::read_dir(self.config_dir())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                !name.starts_with("pod-") && !name.starts_with("namespace-")
            })
            .collect();
        files.sort();
        for file in files {
            let text = fs::read_to_string(&file)?;
            objects.extend(yaml::documents(&text).with_context(|| file.display().to_string())?);
        }
        let mut now = BTreeSet::new();
        for obj in objects {
            let s = |p: &str| {
                obj.pointer(p)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            now.insert((
                s("/apiVersion"),
                s("/kind"),
                s("/metadata/namespace"),
                s("/metadata/name"),
            ));
            api.apply_object(obj)?;
        }
        let mut published = self
            .shared
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (v, k, ns, name) in published.difference(&now) {
            api.delete(v, k, ns, name)?;
        }
        *published = now;
        Ok(())
    }

    /// Whether this bed was made by [`TestBed::kubernetes`].
    pub fn is_kubernetes(&self) -> bool {
        self.shared.kubernetes
    }

    /// Namespace YAML with the labels set so far.
    pub fn namespace_yaml(&self, namespace: &str) -> String {
        let state = self.shared.state();
        let labels = state.namespaces.get(namespace).cloned().unwrap_or_default();
        yaml::namespace(namespace, &labels)
    }

    /// Starts recording every frame that crosses the fabric between nodes.
    pub fn wire_capture(&self) -> Result<WireCapture> {
        WireCapture::start(self.shared.fabric.path())
    }

    fn destroy(&self) -> Result<()> {
        let mut errors = Vec::new();
        if let Err(e) = destroy_tree(self.shared.cgroup.path()) {
            errors.push(format!("{e:#}"));
        }
        for node in self.nodes() {
            if let Err(e) = remove_dir(node.pin_dir()) {
                errors.push(format!("{e:#}"));
            }
        }
        let mut netns = std::mem::take(&mut self.shared.state().netns);
        netns.push(self.shared.fabric.clone());
        for ns in netns.iter().rev() {
            if let Err(e) = ns.delete() {
                errors.push(format!("{e:#}"));
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "testbed: test failed; logs kept in {}",
                self.shared.workdir.display()
            );
        } else if let Err(e) = fs::remove_dir_all(&self.shared.workdir) {
            errors.push(format!("rm {}: {e}", self.shared.workdir.display()));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!(errors.join("; "))
        }
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        if let Err(e) = self.destroy() {
            eprintln!("testbed {}: cleanup failed: {e:#}", self.shared.id);
        }
    }
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))
}
