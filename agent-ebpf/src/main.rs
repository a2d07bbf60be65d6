//! sockmesh's eBPF programs.
//!
//! - `connect4`/`connect6` (cgroup/connect*, attached once at the node's parent cgroup): rewrite the
//!   destination of an enrolled workload's TCP connect to its pod's outbound listener on loopback and
//!   remember where it was going (`PENDING`, by socket cookie).
//! - `sock_ops_cb` (sockops, same parent cgroup): when a redirected connection is established,
//!   publish the original destination under a key the proxy computes from the accepted socket
//!   (`CONNS`), and forget it when the socket closes.
//! - `sk_lookup_steer` (sk_lookup, linked into each enrolled pod's network namespace): hand TCP
//!   connections arriving for the pod's addresses to the proxy's inbound listener.
//!
//! The maps and their key formats are declared in `maps.rs` and documented in `sockmesh-common`.
#![no_std]
#![no_main]

mod addr;
mod connect;
mod maps;
mod sk_lookup;
mod sock_ops;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
