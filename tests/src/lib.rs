//! Test bed: nodes and pods built from network namespaces, veths and cgroups on one machine.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! if !testbed::require_root() { return Ok(()); }
//! let bed = testbed::TestBed::new("capture")?;
//! let (n1, n2) = (bed.node("n1")?, bed.node("n2")?);
//! let sleep = n1.pod("test1", "sleep")?;
//! let httpbin = n2.pod("test2", "httpbin")?;
//! let _srv = httpbin.serve_echo(8000)?;
//! let wire = bed.wire_capture()?;
//! let reply = sleep.connect(httpbin.v4(8000), "hello")?;
//! assert_eq!(reply.peer.ip(), sleep.ipv4());
//! assert!(wire.finish()?.contains(b"hello"));
//! # Ok(()) }
//! ```

mod addr;
mod agent;
mod apiserver;
mod bed;
pub mod bpf;
mod capture;
mod cgroup;
mod cleanup;
mod client;
mod mounts;
mod netns;
mod node;
mod pod;
mod process;
pub mod seed;
mod tool;
mod wait;
mod yaml;

pub use agent::{
    Agent, AgentPorts, SOCKMESH_BIN_ENV, kubernetes_command, node_command, sockmesh_bin,
};
pub use apiserver::{ApiRequest, ApiServer, ServiceAccountToken};
pub use bed::TestBed;
pub use capture::{Flow, Frame, Segment, Wire, WireCapture, is_tls_records};
pub use cgroup::{Cgroup, cgroup_of};
pub use cleanup::{PREFIX, Swept, sweep_stale};
pub use client::{ConnectError, EchoReply, FailKind, ManyReport};
pub use mounts::{bpffs_mount, cgroup2_mount};
pub use node::Node;
pub use pod::{Container, MAIN_CONTAINER, Pod, PodOptions};
pub use process::{Process, RUN_TIMEOUT};
pub use tool::{POD_TOOL_ENV, pod_tool, set_pod_tool};
pub use wait::eventually;
pub use yaml::{CGROUP_ANNOTATION, NETNS_ANNOTATION};

/// Whether the test can build namespaces and cgroups. Not root and `CI` unset: says loudly that
/// the test is skipped and returns false. Not root in CI: panics, because CI must run these tests.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("end-to-end tests need root, and CI is set: run them as root");
    }
    eprintln!("\n*** SKIPPED (needs root): end-to-end test bed tests need root ***\n");
    false
}
