//! TLS and authorization policy: Istio's PeerAuthentication / DestinationRule (and legacy
//! MeshPolicy / Policy) and AuthorizationPolicy semantics for sockmesh, resolved per connection.
//!
//! # Using it from the agent
//!
//! - Start a source: [`watch::FileSource::start`] loads `--config PATH`, watches it and returns a
//!   [`watch::ConfigHandle`]. Another source (the Kubernetes API later) builds a [`model::Resources`]
//!   and calls [`watch::ConfigHandle::apply`]; nothing else changes.
//! - Per connection: `let snap = handle.current();` (an `Arc<Snapshot>`, never half-updated), then
//!   - [`Snapshot::inbound`]`(&PodKey, target_port) -> Option<Inbound>` on the server side;
//!   - [`Snapshot::outbound`]`(Option<&PodKey>, SocketAddr) -> Outbound` on the client side: the
//!     destination, whether the port carries application TLS, and per endpoint the upstream
//!     address, pod, mesh membership, SPIFFE identity, server mode and [`decision::ClientTls`]
//!     (mode, SNI, SANs, certificate sources, which resource decided) with the expected outcome;
//!   - [`Snapshot::authorize`]`(&PodKey, &AuthzRequest) -> AuthzDecision` on the server side,
//!     once per inbound connection, with the verified peer identity (see [`authz`]).
//! - Capture: [`Snapshot::pods_on_node`] yields mesh pods; [`model::Pod`] exposes IPs, service
//!   account, [`model::Pod::spiffe_id`], [`model::Pod::cgroup_paths`] and [`model::Pod::netns_path`].
//! - Changes: [`watch::ConfigHandle::subscribe`] gives a `tokio::sync::watch::Receiver`.

pub mod authz;
mod authz_check;
pub mod auto_mtls;
pub mod check;
pub mod cli;
pub mod decision;
pub mod destination_rule;
pub mod diagnostic;
pub mod explain;
pub mod legacy;
pub mod load;
pub mod model;
pub mod outcome;
pub mod peer_authn;
mod port_numbers;
pub mod resolver;
pub mod settings;
pub mod snapshot;
pub mod watch;

pub use authz::{AuthzAction, AuthzDecision, AuthzRequest, DryRunOutcome};
pub use decision::{ClientTls, Destination, Endpoint, Inbound, Outbound};
pub use model::{InboundMode, Pod, PodKey, TlsMode};
pub use settings::MeshSettings;
pub use snapshot::Snapshot;
pub use watch::{ConfigHandle, FileSource};
