//! Is sockmesh being uninstalled? The agent watches its own DaemonSet (found from its pod's
//! `ownerReferences`, or `--daemonset-name`) and its namespace, and remembers when it has seen
//! either go away: the DaemonSet deleted, being deleted (`deletionTimestamp`) or replaced by one
//! with another uid, or the namespace terminating or deleted. On SIGTERM `run` then removes
//! capture before it drains (ARCHITECTURE.md, "Uninstall"); otherwise the pins stay for the next
//! agent, as on any restart, crash or rolling update.
//!
//! The decision comes from watches opened at start, never from a request made at SIGTERM:
//! `kubectl delete -k` may remove the agent's RBAC before the kubelet stops it.
use std::sync::{Arc, Mutex};

use ::kube::{Api, Client, Resource as _, ResourceExt as _};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Namespace, Pod},
};
use tracing::{info, warn};

use super::{api_source::Backoff, named_object};

/// Flags of the uninstall watch (with `--kubernetes`).
#[derive(Debug, Clone, clap::Args)]
pub struct OwnerFlags {
    /// The DaemonSet that runs this agent, in the pod's namespace (default: the pod's controller
    /// from its ownerReferences). When it is deleted, the agent removes capture on SIGTERM.
    #[arg(long)]
    pub daemonset_name: Option<String>,
}

/// Why the agent should remove capture when it stops, once it has seen one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    DaemonSetDeleted,
    DaemonSetDeleting,
    DaemonSetReplaced,
    NamespaceTerminating,
    NamespaceDeleted,
}

impl Removal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DaemonSetDeleted => "the agent's DaemonSet was deleted",
            Self::DaemonSetDeleting => "the agent's DaemonSet is being deleted",
            Self::DaemonSetReplaced => "the agent's DaemonSet was replaced by another",
            Self::NamespaceTerminating => "the agent's namespace is terminating",
            Self::NamespaceDeleted => "the agent's namespace was deleted",
        }
    }
}

/// What the two watches have seen. A DaemonSet that was never seen (a wrong `--daemonset-name`)
/// is never taken as deleted, so a misconfiguration cannot turn a restart into an uninstall.
#[derive(Debug, Default)]
pub struct OwnerState {
    /// The owner's uid: from the pod's ownerReference, else the first sighting.
    uid: Option<String>,
    daemonset: Option<Removal>,
    namespace_seen: bool,
    namespace: Option<Removal>,
}

impl OwnerState {
    fn with_uid(uid: Option<String>) -> Self {
        Self {
            uid,
            ..Self::default()
        }
    }

    /// The DaemonSet as listed or changed; `None`: deleted, or absent from a list.
    pub fn daemonset(&mut self, ds: Option<&DaemonSet>) {
        self.daemonset = match ds {
            Some(ds) if ds.meta().deletion_timestamp.is_some() => Some(Removal::DaemonSetDeleting),
            Some(ds) => match (&self.uid, ds.uid()) {
                (Some(known), Some(uid)) if *known != uid => Some(Removal::DaemonSetReplaced),
                (_, uid) => {
                    self.uid = self.uid.take().or(uid);
                    None
                }
            },
            None if self.uid.is_some() => Some(Removal::DaemonSetDeleted),
            None => None,
        };
    }

    /// The namespace as listed or changed; `None`: deleted, or absent from a list.
    pub fn namespace(&mut self, ns: Option<&Namespace>) {
        self.namespace = match ns {
            Some(ns) => {
                self.namespace_seen = true;
                let phase = ns.status.as_ref().and_then(|s| s.phase.as_deref());
                (ns.meta().deletion_timestamp.is_some() || phase == Some("Terminating"))
                    .then_some(Removal::NamespaceTerminating)
            }
            None if self.namespace_seen => Some(Removal::NamespaceDeleted),
            None => None,
        };
    }

    pub fn removal(&self) -> Option<Removal> {
        self.daemonset.or(self.namespace)
    }
}

/// The watches' verdict, read on SIGTERM.
#[derive(Clone, Default)]
pub struct OwnerWatch {
    state: Arc<Mutex<OwnerState>>,
}

impl OwnerWatch {
    /// Starts the watches for the pod `namespace/pod` (downward API); without it there is nothing
    /// to watch and the agent never removes capture by itself.
    pub fn start(client: Client, own_pod: Option<(String, String)>, flags: &OwnerFlags) -> Self {
        let watch = OwnerWatch::default();
        let Some((namespace, pod)) = own_pod else {
            warn!(
                "POD_NAME/POD_NAMESPACE unset: deleting the DaemonSet will leave capture pinned (run `sockmesh uninstall` on each node)"
            );
            return watch;
        };
        let (state, daemonset) = (watch.state.clone(), flags.daemonset_name.clone());
        tokio::spawn(async move {
            let backoff = Backoff::default();
            let owner = match daemonset {
                Some(name) => Some((name, None)),
                None => controller_of(&client, &namespace, &pod, backoff).await,
            };
            let Some((name, uid)) = owner else {
                info!(
                    namespace,
                    pod,
                    "the agent's pod has no DaemonSet owner: capture stays pinned when it stops"
                );
                return;
            };
            info!(namespace, daemonset = %name, "watching the agent's DaemonSet and namespace for an uninstall");
            *lock(&state) = OwnerState::with_uid(uid);
            let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &namespace);
            let ds = named_object::follow(daemonsets, &name, backoff, |d| {
                observe(&state, |s| s.daemonset(d))
            });
            let namespaces: Api<Namespace> = Api::all(client);
            let ns = named_object::follow(namespaces, &namespace, backoff, |n| {
                observe(&state, |s| s.namespace(n))
            });
            futures::join!(ds, ns);
        });
        watch
    }

    /// Why capture should go when the agent stops, if the watches have seen the DaemonSet or its
    /// namespace go away.
    pub fn removal(&self) -> Option<Removal> {
        lock(&self.state).removal()
    }
}

/// Applies one sighting and logs when the verdict changes.
fn observe(state: &Mutex<OwnerState>, sighting: impl FnOnce(&mut OwnerState)) {
    let mut state = lock(state);
    let before = state.removal();
    sighting(&mut state);
    match state.removal() {
        Some(removal) if before != Some(removal) => {
            info!(
                reason = removal.as_str(),
                "uninstall seen: capture will be removed when the agent stops"
            )
        }
        None if before.is_some() => {
            info!("uninstall no longer seen: capture stays when the agent stops")
        }
        _ => {}
    }
}

fn lock(state: &Mutex<OwnerState>) -> std::sync::MutexGuard<'_, OwnerState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The DaemonSet that controls the pod, by name and uid; retried until the API answers.
async fn controller_of(
    client: &Client,
    namespace: &str,
    pod: &str,
    backoff: Backoff,
) -> Option<(String, Option<String>)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut delay = backoff.min;
    loop {
        match pods.get_opt(pod).await {
            Ok(found) => {
                return found?
                    .owner_references()
                    .iter()
                    .find(|o| o.kind == "DaemonSet" && o.controller == Some(true))
                    .map(|o| (o.name.clone(), Some(o.uid.clone())));
            }
            Err(e) => {
                warn!(error = %e, "reading the agent's own pod failed; retrying");
                tokio::time::sleep(delay).await;
                delay = backoff.next(delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(uid: &str, deleting: bool) -> DaemonSet {
        let mut meta = serde_json::json!({"name": "sockmesh-agent", "namespace": "sockmesh-system", "uid": uid});
        if deleting {
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        serde_json::from_value(serde_json::json!({"metadata": meta})).unwrap()
    }

    fn ns(phase: &str) -> Namespace {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "sockmesh-system"}, "status": {"phase": phase}}),
        )
        .unwrap()
    }

    #[test]
    fn deleted_deleting_or_replaced_daemonset_means_uninstall() {
        let mut s = OwnerState::with_uid(Some("a".into()));
        s.daemonset(Some(&ds("a", false)));
        assert_eq!(s.removal(), None, "present: a restart keeps the pins");
        s.daemonset(Some(&ds("a", true)));
        assert_eq!(s.removal(), Some(Removal::DaemonSetDeleting));
        s.daemonset(None);
        assert_eq!(s.removal(), Some(Removal::DaemonSetDeleted));
        s.daemonset(Some(&ds("b", false)));
        assert_eq!(s.removal(), Some(Removal::DaemonSetReplaced));
    }

    #[test]
    fn a_daemonset_never_seen_is_never_taken_as_deleted() {
        let mut s = OwnerState::default();
        s.daemonset(None);
        assert_eq!(s.removal(), None);
        s.daemonset(Some(&ds("a", false)));
        s.daemonset(None);
        assert_eq!(
            s.removal(),
            Some(Removal::DaemonSetDeleted),
            "seen, then gone"
        );
    }

    #[test]
    fn terminating_or_deleted_namespace_means_uninstall() {
        let mut s = OwnerState::default();
        s.namespace(None);
        assert_eq!(s.removal(), None);
        s.namespace(Some(&ns("Active")));
        assert_eq!(s.removal(), None);
        s.namespace(Some(&ns("Terminating")));
        assert_eq!(s.removal(), Some(Removal::NamespaceTerminating));
        s.namespace(None);
        assert_eq!(s.removal(), Some(Removal::NamespaceDeleted));
    }
}
