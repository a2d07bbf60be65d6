//! meshConfig from the API: the `istio` ConfigMap (`data.mesh`, Istio's layout) of the namespace
//! `--root-namespace` names (else `istio-system`), watched by name with a field selector, so the
//! agent never reads another ConfigMap. Flags still win over it; see [`crate::policy::settings`].
//!
//! At start the agent waits a few seconds for the first list, so the trust domain (read once:
//! certificates) can come from the ConfigMap; without an answer it starts from flags and defaults
//! and takes the root namespace and auto mTLS from the ConfigMap when it arrives.
use std::time::Duration;

use ::kube::{Api, Client};
use k8s_openapi::api::core::v1::ConfigMap;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{api_source::Backoff, named_object};
use crate::policy::{
    ConfigHandle, MeshSettings,
    settings::{DEFAULT_ROOT_NAMESPACE, MeshConfig, SettingFlags, SettingsHandle, SettingsReport},
};

/// Istio's meshConfig ConfigMap (a revisioned install's `istio-<rev>` is not read).
pub const CONFIG_MAP: &str = "istio";
/// Its key holding meshConfig YAML.
const MESH_KEY: &str = "mesh";
/// How long the start waits for the first list of the ConfigMap.
const FIRST_LIST: Duration = Duration::from_secs(10);

/// What the watch last saw: `None` until the first list, then the ConfigMap's meshConfig
/// (`Some(None)`: absent).
type Seen = Option<Option<MeshConfig>>;

/// The settings in force, and the ConfigMap watch behind them (with `--kubernetes`).
pub struct MeshSettingsSource {
    /// What the admin API shows.
    pub report: SettingsHandle,
    watch: Option<(watch::Receiver<Seen>, String)>,
    flags: SettingFlags,
}

impl MeshSettingsSource {
    /// Flags and defaults only (`--config`).
    pub fn flags_only(flags: SettingFlags) -> Self {
        let report = SettingsReport::resolve(&flags, None);
        Self {
            report: report.into_handle(),
            watch: None,
            flags,
        }
    }

    /// Starts watching the ConfigMap and waits up to [`FIRST_LIST`] for it, so the settings to
    /// start with (the trust domain among them stays for the agent's life) can come from it.
    pub async fn watch(client: Client, flags: SettingFlags) -> Self {
        let namespace = flags
            .root_namespace
            .clone()
            .unwrap_or_else(|| DEFAULT_ROOT_NAMESPACE.to_owned());
        let (tx, mut seen) = watch::channel(None);
        let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
        tokio::spawn(follow_configmap(api, tx, Backoff::default()));
        let listed = tokio::time::timeout(FIRST_LIST, seen.wait_for(Option::is_some))
            .await
            .is_ok_and(|r| r.is_ok());
        if !listed {
            warn!(configmap = %format!("{namespace}/{CONFIG_MAP}"), "meshConfig not read within {FIRST_LIST:?}: starting from flags and defaults");
        }
        let report = resolve(&flags, &seen, &namespace);
        info!(trust_domain = %report.trust_domain.value, source = report.trust_domain.source.as_str(), root_namespace = %report.root_namespace.value, auto_mtls = report.auto_mtls.value, "mesh settings");
        Self {
            report: report.into_handle(),
            watch: Some((seen, namespace)),
            flags,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> MeshSettings {
        self.report.load().settings()
    }

    /// Puts the settings in force into `config` and applies every later ConfigMap change: the
    /// root namespace and auto mTLS rebuild the policy snapshot; a changed trust domain is
    /// reported as pending until a restart.
    pub fn apply(self, config: ConfigHandle) {
        config.set_settings(self.settings());
        let Some((mut seen, namespace)) = self.watch else {
            return;
        };
        let (report, flags) = (self.report, self.flags);
        let in_force = report.load().trust_domain.clone();
        tokio::spawn(async move {
            while seen.changed().await.is_ok() {
                let next = resolve(&flags, &seen, &namespace).keep_trust_domain(&in_force);
                if let Some(pending) = &next.trust_domain_after_restart {
                    warn!(in_force = %in_force.value, configmap = %pending, "meshConfig trustDomain changed: it applies after a restart");
                }
                config.set_settings(next.settings());
                report.store(next.into());
            }
        });
    }
}

fn resolve(flags: &SettingFlags, seen: &watch::Receiver<Seen>, namespace: &str) -> SettingsReport {
    let mesh = seen.borrow().clone().flatten();
    SettingsReport::resolve(flags, mesh.as_ref()).with_configmap(namespace, CONFIG_MAP)
}

/// Publishes the ConfigMap's meshConfig after every list and change.
async fn follow_configmap(api: Api<ConfigMap>, tx: watch::Sender<Seen>, backoff: Backoff) {
    named_object::follow(api, CONFIG_MAP, backoff, |cm| {
        let found = match cm {
            Some(cm) => mesh_config(cm).unwrap_or_else(|| tx.borrow().clone().flatten()),
            None => None,
        };
        tx.send_if_modified(|seen| {
            let changed = seen.as_ref() != Some(&found);
            *seen = Some(found);
            changed
        });
    })
    .await;
}

/// The ConfigMap's meshConfig (`Some(None)`: no `data.mesh`); `None` when it does not parse
/// (logged), and then the last known one stays, as a bad `--config` file keeps the last good one.
fn mesh_config(cm: &ConfigMap) -> Option<Option<MeshConfig>> {
    let Some(yaml) = cm.data.as_ref().and_then(|d| d.get(MESH_KEY)) else {
        return Some(None);
    };
    match MeshConfig::from_yaml(yaml) {
        Ok(mesh) => Some(Some(mesh)),
        Err(e) => {
            warn!(error = %e, "meshConfig in the istio ConfigMap does not parse; keeping the last known one");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configmap(mesh: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "istio", "namespace": "istio-system"},
            "data": {"mesh": mesh, "meshNetworks": "networks: {}"}
        }))
        .unwrap()
    }

    #[test]
    fn reads_data_mesh_and_tells_a_broken_one() {
        let cm = configmap("trustDomain: td.example\nenableAutoMtls: false\n");
        let mesh = mesh_config(&cm).unwrap().unwrap();
        assert_eq!(mesh.trust_domain.as_deref(), Some("td.example"));
        assert_eq!(mesh.enable_auto_mtls, Some(false));
        assert_eq!(mesh_config(&configmap("enableAutoMtls: [")), None);
        assert_eq!(mesh_config(&ConfigMap::default()), Some(None));
    }
}
