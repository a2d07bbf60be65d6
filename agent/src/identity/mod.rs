//! Workload identities: the mesh CA, certificate issuance and the per-identity cert cache with its
//! prebuilt TLS configs. SPIFFE IDs themselves live in the leaf module `crate::spiffe`.

pub mod ca;
pub mod issuer;
pub mod manager;

pub use crate::spiffe::{SpiffeError, SpiffeId};
pub use ca::{CaError, MeshCa};
pub use issuer::{CertInfo, IssueError, Issuer, WorkloadCert};
pub use manager::{CertManager, IdentityConfigs, IssueCert, ManagerError, WorkloadIdentity};
