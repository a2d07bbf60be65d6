//! Workload identities: the mesh CA, SPIFFE IDs, certificate issuance and the per-identity cert cache.

pub mod ca;
pub mod issuer;
pub mod manager;
pub mod spiffe;

pub use ca::{CaError, MeshCa};
pub use issuer::{CertInfo, IssueError, Issuer, WorkloadCert};
pub use manager::{CertManager, IdentityConfigs, IssueCert, ManagerError, WorkloadIdentity};
pub use spiffe::{SpiffeError, SpiffeId};
