//! What `/workloads` and `/certs` return: typed so the lead's [`AdminSource`](super::AdminSource)
//! and the CLI agree on the shape, and JSON readers get stable field names.
use std::{net::IpAddr, time::SystemTime};

use serde::{Deserialize, Serialize};

/// Where a pod is in enrollment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentState {
    /// Listeners up, cgroups and addresses in the capture maps.
    Enrolled,
    /// Known but not (yet) enrolled, e.g. no certificate or netns yet.
    Pending,
    /// Enrollment failed; `detail` says why.
    Failed,
}

impl EnrollmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enrolled => "enrolled",
            Self::Pending => "pending",
            Self::Failed => "failed",
        }
    }
}

/// One pod of this node as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    /// SPIFFE id of the pod's certificate, once issued.
    pub identity: Option<String>,
    pub ips: Vec<IpAddr>,
    pub cgroup_ids: Vec<u64>,
    /// Path of the pod's network namespace.
    pub netns: String,
    pub state: EnrollmentState,
    /// Why the pod is pending or failed.
    pub detail: Option<String>,
}

/// A workload certificate: what `openssl x509 -text` would show that matters for mTLS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// SPIFFE id (the URI SAN).
    pub identity: String,
    /// Hex, colon-free.
    pub serial: String,
    pub issuer: String,
    #[serde(with = "rfc3339")]
    pub not_before: SystemTime,
    #[serde(with = "rfc3339")]
    pub not_after: SystemTime,
    pub sans: Vec<String>,
    /// Pods (`namespace/name`) presenting this certificate.
    pub workloads: Vec<String>,
}

/// RFC 3339 timestamps (UTC, seconds) rather than serde's default `{secs, nanos}`.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_seconds(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(D::Error::custom)
    }
}
