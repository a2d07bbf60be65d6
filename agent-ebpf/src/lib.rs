//! Host-side stub so the agent can name this crate as a build dependency.
#![no_std]
