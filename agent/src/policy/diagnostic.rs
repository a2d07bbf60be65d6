//! Findings from loading and checking configuration, with stable codes (like `istioctl analyze`).

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::model::ResourceRef;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// Stable codes: scripts and docs refer to them, so never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Code {
    /// A document could not be parsed (error).
    ParseError,
    /// A field the model does not know (warning).
    UnknownField,
    /// Two documents define the same kind/namespace/name (error).
    DuplicateResource,
    /// A value is present but invalid, e.g. an unparsable IP (warning).
    InvalidValue,
    IstioMutualToNonMesh,
    StrictWithNonMeshCaller,
    DisableToStrict,
    PortLevelMtlsWithoutSelector,
    RootNamespaceSelector,
    MeshPolicyNotDefault,
    IstioMutualWithCertificates,
    HostMatchesNoService,
    ShadowedPolicy,
    DoubleTls,
    LegacyPolicyNotDefault,
    /// CUSTOM AuthorizationPolicy: no external authorizer, fails closed (error).
    AuthzCustomUnsupported,
    /// HTTP-only fields in an AuthorizationPolicy, evaluated on TCP connections (warning).
    AuthzHttpOnly,
    /// ALLOW policies leave a workload reachable from no in-mesh caller (warning).
    AuthzUnreachable,
    /// A principal in a trust domain that is neither ours nor an alias (warning).
    AuthzForeignTrustDomain,
    /// An AuthorizationPolicy that applies to no pod (warning).
    AuthzSelectsNothing,
    /// A `when` key Istio does not know: the rule is skipped (error).
    AuthzUnknownKey,
    /// `targetRef(s)`: only for gateways and waypoints, never applies to a workload (warning).
    AuthzTargetRef,
    /// A DestinationRule `portLevelSettings[].port.number` of 0 (warning: matches no port) or
    /// outside 1-65535 (error: the rule is not loaded).
    InvalidPortNumber,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::ParseError => "SM0001",
            Code::UnknownField => "SM0002",
            Code::DuplicateResource => "SM0003",
            Code::InvalidValue => "SM0004",
            Code::IstioMutualToNonMesh => "SM1001",
            Code::StrictWithNonMeshCaller => "SM1002",
            Code::DisableToStrict => "SM1003",
            Code::PortLevelMtlsWithoutSelector => "SM1004",
            Code::RootNamespaceSelector => "SM1005",
            Code::MeshPolicyNotDefault => "SM1006",
            Code::IstioMutualWithCertificates => "SM1007",
            Code::HostMatchesNoService => "SM1008",
            Code::ShadowedPolicy => "SM1009",
            Code::DoubleTls => "SM1010",
            Code::LegacyPolicyNotDefault => "SM1011",
            Code::AuthzCustomUnsupported => "SM1201",
            Code::AuthzHttpOnly => "SM1202",
            Code::AuthzUnreachable => "SM1203",
            Code::AuthzForeignTrustDomain => "SM1204",
            Code::AuthzSelectsNothing => "SM1205",
            Code::AuthzUnknownKey => "SM1206",
            Code::AuthzTargetRef => "SM1207",
            Code::InvalidPortNumber => "SM1012",
        }
    }
}

/// Where in the configuration a finding points.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Zero-based index of the YAML document in the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    /// Field path such as `spec.trafficPolicy.tls.mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    #[serde(serialize_with = "code_str")]
    pub code: Code,
    #[serde(flatten)]
    pub location: Location,
    pub message: String,
}

fn code_str<S: serde::Serializer>(c: &Code, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.as_str())
}

impl Diagnostic {
    pub fn error(code: Code, location: Location, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            location,
            message: message.into(),
        }
    }

    pub fn warning(code: Code, location: Location, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            code,
            location,
            message: message.into(),
        }
    }

    /// A finding about one resource, without file position.
    pub fn about(
        severity: Severity,
        code: Code,
        resource: ResourceRef,
        message: impl Into<String>,
    ) -> Self {
        let location = Location {
            resource: Some(resource),
            ..Location::default()
        };
        Self {
            severity,
            code,
            location,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "Error",
            Severity::Warning => "Warning",
        };
        write!(f, "{sev} [{}]", self.code.as_str())?;
        let l = &self.location;
        if let Some(r) = &l.resource {
            write!(f, " ({r})")?;
        }
        if let Some(file) = &l.file {
            write!(f, " {}", file.display())?;
            if let Some(d) = l.document {
                write!(f, " document {d}")?;
            }
        }
        if let Some(field) = &l.field {
            write!(f, " field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}
