//! The settings Istio keeps in meshConfig (trust domain, root namespace, auto mTLS), resolved in one
//! place from three sources, highest first: a flag that was given, the `istio` ConfigMap's
//! `data.mesh` (with `--kubernetes`), the default. Every value keeps where it came from, so
//! `sockmesh status` can say it.
//!
//! What applies live: the root namespace and auto mTLS only change how the policy snapshot is
//! built, so a change rebuilds it ([`crate::policy::ConfigHandle::set_settings`]). The trust domain
//! is in every issued certificate, the CA and the peer verifiers, so it is read once at start; a
//! later change is shown as pending (`trust_domain_after_restart`) until the agent restarts.
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::spiffe::{SpiffeError, TrustDomains};

/// meshConfig's defaults (Istio's `MeshConfig`: `trustDomain`, `rootNamespace`, `enableAutoMtls`).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";
pub const DEFAULT_AUTO_MTLS: bool = true;

/// The settings a snapshot is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSettings {
    pub root_namespace: String,
    pub trust_domain: String,
    /// Trust domains treated as ours in authorization principals (meshConfig
    /// `trustDomainAliases`).
    pub trust_domain_aliases: Vec<String>,
    pub auto_mtls: bool,
    /// DNS suffix of Service FQDNs (`<svc>.<ns>.svc.<cluster_domain>`).
    pub cluster_domain: String,
}

impl Default for MeshSettings {
    fn default() -> Self {
        Self {
            root_namespace: DEFAULT_ROOT_NAMESPACE.into(),
            trust_domain: DEFAULT_TRUST_DOMAIN.into(),
            trust_domain_aliases: Vec::new(),
            auto_mtls: DEFAULT_AUTO_MTLS,
            cluster_domain: "cluster.local".into(),
        }
    }
}

impl MeshSettings {
    /// The trust domain and its aliases: whom the mesh TLS verifiers accept as peers.
    pub fn trust_domains(&self) -> Result<TrustDomains, SpiffeError> {
        TrustDomains::new(&self.trust_domain, &self.trust_domain_aliases)
    }
}

/// The fields sockmesh reads from meshConfig YAML; absent (or empty) fields are `None`, and every
/// other meshConfig field is ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    pub trust_domain: Option<String>,
    pub root_namespace: Option<String>,
    pub enable_auto_mtls: Option<bool>,
}

impl MeshConfig {
    /// Parses the ConfigMap's `data.mesh`.
    pub fn from_yaml(yaml: &str) -> Result<Self, serde_norway::Error> {
        let parsed: Option<MeshConfig> = serde_norway::from_str(yaml)?;
        let mut mesh = parsed.unwrap_or_default();
        let blank = |v: &mut Option<String>| {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *v = None;
            }
        };
        blank(&mut mesh.trust_domain);
        blank(&mut mesh.root_namespace);
        Ok(mesh)
    }
}

/// Where a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Flag,
    #[serde(rename = "configmap")]
    ConfigMap,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flag => "flag",
            Self::ConfigMap => "configmap",
            Self::Default => "default",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

/// The first of flag, ConfigMap, default that has a value.
fn pick<T>(flag: Option<T>, configmap: Option<T>, default: T) -> Setting<T> {
    match (flag, configmap) {
        (Some(value), _) => Setting {
            value,
            source: Source::Flag,
        },
        (None, Some(value)) => Setting {
            value,
            source: Source::ConfigMap,
        },
        (None, None) => Setting {
            value: default,
            source: Source::Default,
        },
    }
}

/// The flags of the meshConfig settings; `None` when not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingFlags {
    pub trust_domain: Option<String>,
    pub root_namespace: Option<String>,
    pub auto_mtls: Option<bool>,
    pub trust_domain_aliases: Vec<String>,
    pub cluster_domain: String,
}

/// The settings in force and where each came from: what `/mesh_config` serves and
/// `sockmesh status` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsReport {
    pub trust_domain: Setting<String>,
    pub root_namespace: Setting<String>,
    pub auto_mtls: Setting<bool>,
    /// The ConfigMap's trust domain when it differs from the one in force: it applies at the next
    /// restart (certificates, CA and peer checks use the trust domain read at start).
    pub trust_domain_after_restart: Option<String>,
    /// `namespace/name` of the meshConfig ConfigMap watched (`--kubernetes` only).
    pub configmap: Option<String>,
    /// Whether that ConfigMap exists with a readable `data.mesh`.
    pub configmap_found: bool,
    /// Flags only (meshConfig's `trustDomainAliases` is not read).
    pub trust_domain_aliases: Vec<String>,
    pub cluster_domain: String,
}

impl SettingsReport {
    /// Resolves every setting from the flags and the ConfigMap's meshConfig (`None`: not read or
    /// absent). The one place defaults apply.
    pub fn resolve(flags: &SettingFlags, mesh: Option<&MeshConfig>) -> Self {
        let from = mesh.cloned().unwrap_or_default();
        Self {
            trust_domain: pick(
                flags.trust_domain.clone(),
                from.trust_domain,
                DEFAULT_TRUST_DOMAIN.to_owned(),
            ),
            root_namespace: pick(
                flags.root_namespace.clone(),
                from.root_namespace,
                DEFAULT_ROOT_NAMESPACE.to_owned(),
            ),
            auto_mtls: pick(flags.auto_mtls, from.enable_auto_mtls, DEFAULT_AUTO_MTLS),
            trust_domain_after_restart: None,
            configmap: None,
            configmap_found: mesh.is_some(),
            trust_domain_aliases: flags.trust_domain_aliases.clone(),
            cluster_domain: flags.cluster_domain.clone(),
        }
    }

    /// Keeps `in_force` as the trust domain (read at start) and records a different resolved one
    /// as pending until the next restart.
    pub fn keep_trust_domain(mut self, in_force: &Setting<String>) -> Self {
        if self.trust_domain != *in_force {
            self.trust_domain_after_restart =
                (self.trust_domain.value != in_force.value).then_some(self.trust_domain.value);
            self.trust_domain = in_force.clone();
        }
        self
    }

    pub fn with_configmap(mut self, namespace: &str, name: &str) -> Self {
        self.configmap = Some(format!("{namespace}/{name}"));
        self
    }

    pub fn settings(&self) -> MeshSettings {
        MeshSettings {
            root_namespace: self.root_namespace.value.clone(),
            trust_domain: self.trust_domain.value.clone(),
            trust_domain_aliases: self.trust_domain_aliases.clone(),
            auto_mtls: self.auto_mtls.value,
            cluster_domain: self.cluster_domain.clone(),
        }
    }
}

/// The report in force, shared by whoever updates it (the ConfigMap watch) and the admin API.
pub type SettingsHandle = Arc<ArcSwap<SettingsReport>>;

impl SettingsReport {
    pub fn into_handle(self) -> SettingsHandle {
        Arc::new(ArcSwap::from_pointee(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> SettingFlags {
        SettingFlags {
            cluster_domain: "cluster.local".into(),
            ..SettingFlags::default()
        }
    }

    #[test]
    fn flag_beats_configmap_beats_default() {
        let mesh = MeshConfig::from_yaml(
            "trustDomain: corp.example\nrootNamespace: mesh-root\nenableAutoMtls: false\n\
             defaultConfig: {discoveryAddress: istiod.istio-system.svc:15012}\n",
        )
        .unwrap();
        let mut f = flags();
        f.root_namespace = Some("from-flag".into());
        let r = SettingsReport::resolve(&f, Some(&mesh));
        assert_eq!(
            (r.trust_domain.value.as_str(), r.trust_domain.source),
            ("corp.example", Source::ConfigMap)
        );
        assert_eq!(
            (r.root_namespace.value.as_str(), r.root_namespace.source),
            ("from-flag", Source::Flag)
        );
        assert_eq!(
            (r.auto_mtls.value, r.auto_mtls.source),
            (false, Source::ConfigMap)
        );
        assert!(r.configmap_found);

        let r = SettingsReport::resolve(&flags(), None);
        assert_eq!(r.settings(), MeshSettings::default());
        assert!(
            [
                r.trust_domain.source,
                r.root_namespace.source,
                r.auto_mtls.source
            ]
            .iter()
            .all(|s| *s == Source::Default)
        );
    }

    #[test]
    fn empty_or_missing_fields_fall_back() {
        assert_eq!(MeshConfig::from_yaml("").unwrap(), MeshConfig::default());
        let mesh = MeshConfig::from_yaml("rootNamespace: \"\"\ntrustDomain: \" \"\n").unwrap();
        assert_eq!(mesh, MeshConfig::default());
        assert!(MeshConfig::from_yaml("enableAutoMtls: maybe\n").is_err());
    }

    #[test]
    fn a_changed_trust_domain_waits_for_a_restart() {
        let start = SettingsReport::resolve(&flags(), None);
        let mesh = MeshConfig {
            trust_domain: Some("new.example".into()),
            ..MeshConfig::default()
        };
        let later =
            SettingsReport::resolve(&flags(), Some(&mesh)).keep_trust_domain(&start.trust_domain);
        assert_eq!(later.trust_domain, start.trust_domain);
        assert_eq!(
            later.trust_domain_after_restart.as_deref(),
            Some("new.example")
        );
        let json = serde_json::to_value(&later).unwrap();
        assert_eq!(json["trust_domain"]["source"], "default");
        let same = SettingsReport::resolve(&flags(), None).keep_trust_domain(&start.trust_domain);
        assert_eq!(same.trust_domain_after_restart, None);
    }
}
