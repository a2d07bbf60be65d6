//! `security.istio.io` PeerAuthentication (v1beta1, v1) and legacy `authentication.istio.io/v1alpha1`
//! MeshPolicy / Policy.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::meta::{ObjectMeta, WorkloadSelector};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PeerAuthentication {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub mtls: Option<PeerMtls>,
    /// Keyed by the workload (target) port, not the Service port.
    #[serde(default)]
    pub port_level_mtls: BTreeMap<u16, PeerMtls>,
}

impl PeerAuthenticationSpec {
    /// A selector with no labels counts as no selector.
    pub fn has_selector(&self) -> bool {
        self.selector.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// The top-level mode; an absent `mtls` is UNSET.
    pub fn mode(&self) -> PeerMode {
        self.mtls.as_ref().map_or(PeerMode::Unset, |m| m.mode)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PeerMtls {
    #[serde(default)]
    pub mode: PeerMode,
}

/// PeerAuthentication's mode including UNSET ("inherit from parent").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PeerMode {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

impl PeerMode {
    /// `None` for UNSET.
    pub fn effective(self) -> Option<InboundMode> {
        match self {
            PeerMode::Unset => None,
            PeerMode::Disable => Some(InboundMode::Disable),
            PeerMode::Permissive => Some(InboundMode::Permissive),
            PeerMode::Strict => Some(InboundMode::Strict),
        }
    }
}

/// What a server-side proxy accepts on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InboundMode {
    Strict,
    Permissive,
    Disable,
}

impl InboundMode {
    pub fn as_str(self) -> &'static str {
        match self {
            InboundMode::Strict => "STRICT",
            InboundMode::Permissive => "PERMISSIVE",
            InboundMode::Disable => "DISABLE",
        }
    }
}

/// Legacy mesh-wide policy; only the one named `default` was ever honoured.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MeshPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: LegacyPolicySpec,
}

/// Legacy namespace or service policy.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: LegacyPolicySpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LegacyPolicySpec {
    #[serde(default)]
    pub targets: Vec<TargetSelector>,
    #[serde(default)]
    pub peers: Vec<PeerAuthenticationMethod>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TargetSelector {
    pub name: String,
    #[serde(default)]
    pub ports: Vec<LegacyPortSelector>,
}

/// A Service port, by number or by name.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LegacyPortSelector {
    #[serde(default)]
    pub number: Option<u16>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PeerAuthenticationMethod {
    /// `Some(None)` for `mtls:` with a null value, which old Istio read as `mtls: {}` (STRICT).
    #[serde(default, deserialize_with = "present")]
    pub mtls: Option<Option<LegacyMtls>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LegacyMtls {
    #[serde(default)]
    pub mode: LegacyMtlsMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LegacyMtlsMode {
    #[default]
    Strict,
    Permissive,
}

/// Distinguishes a key present with a null value from an absent key.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl LegacyPolicySpec {
    /// `peers: [{mtls: {}}]` is STRICT, `mode: PERMISSIVE` is PERMISSIVE, no mtls peer is plaintext only.
    pub fn mode(&self) -> InboundMode {
        match self.peers.iter().find_map(|p| p.mtls.as_ref()) {
            None => InboundMode::Disable,
            Some(m) => match m.as_ref().map(|m| m.mode).unwrap_or_default() {
                LegacyMtlsMode::Strict => InboundMode::Strict,
                LegacyMtlsMode::Permissive => InboundMode::Permissive,
            },
        }
    }
}
