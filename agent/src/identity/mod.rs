//! Workload identities: where certificates come from (the local plug-in CA, or a remote CA over
//! Istio's CA API), certificate issuance and the per-identity cert cache with its prebuilt TLS
//! configs. SPIFFE IDs themselves live in the leaf module `crate::spiffe`.

pub mod ca;
pub mod ca_api;
pub mod ca_client;
pub mod csr;
pub mod issuer;
pub mod manager;
pub mod source;

pub use crate::spiffe::{SpiffeError, SpiffeId};
pub use ca::{CaError, MeshCa};
pub use issuer::{CertInfo, IssueError, Issuer, WorkloadCert};
pub use manager::{CertManager, IdentityConfigs, IssueCert, ManagerError, WorkloadIdentity};
