//! TLS for the node proxy: the mesh (ISTIO_MUTUAL) profile, who may be a mesh peer, origination
//! (SIMPLE/MUTUAL) and classification of inbound bytes.
//!
//! Depends only on the leaf modules `crate::spiffe` and `crate::crypto`, never on `identity`
//! (which builds its configs with [`mesh`]).

pub mod bundle;
mod client_hello;
pub mod detect;
pub mod mesh;
pub mod origination;
pub mod peer;
#[cfg(test)]
pub(crate) mod test_pki;
mod verify;
