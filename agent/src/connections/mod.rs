//! Live connections: a tracker the admin API snapshots (`/connections`) and the stream wrapper
//! that counts each connection's bytes as they move.
mod counted;
mod tracker;

pub use counted::Counted;
pub use tracker::{ConnectionGuard, ConnectionSnapshot, ConnectionTracker};

#[cfg(test)]
mod tests;
