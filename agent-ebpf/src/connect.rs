//! cgroup/connect4 and cgroup/connect6: redirect an enrolled workload's TCP connect to its proxy.
use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_socket_cookie,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use sockmesh_common::{
    DIRECTION_OUTBOUND, OrigDst, Workload, is_loopback, is_v4_mapped, stat, v4_mapped,
};

use crate::{
    addr::{ctx_read, from_ip4, from_ip6, to_ip6_words},
    maps::{PENDING, WORKLOADS, count, port_excluded},
};

const ALLOW: i32 = 1;
const SOCK_STREAM: u32 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const LOOPBACK4: [u8; 4] = [127, 0, 0, 1];
const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    let (kind, ip4, port) = (
        ctx_read!(sa, type_),
        ctx_read!(sa, user_ip4),
        ctx_read!(sa, user_port),
    );
    if kind != SOCK_STREAM {
        return ALLOW;
    }
    let dst = from_ip4(ip4);
    if let Some(proxy_port) = redirect_target(&ctx, dst, port, AF_INET) {
        // SAFETY: writes to user_ip4/user_port are permitted in connect4; one store per field.
        unsafe {
            core::ptr::write_volatile(&raw mut (*sa).user_ip4, u32::from_ne_bytes(LOOPBACK4));
            core::ptr::write_volatile(&raw mut (*sa).user_port, u32::from(proxy_port.to_be()));
        }
    }
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    let (kind, port) = (ctx_read!(sa, type_), ctx_read!(sa, user_port));
    let ip6 = [
        ctx_read!(sa, user_ip6[0]),
        ctx_read!(sa, user_ip6[1]),
        ctx_read!(sa, user_ip6[2]),
        ctx_read!(sa, user_ip6[3]),
    ];
    if kind != SOCK_STREAM {
        return ALLOW;
    }
    let dst = from_ip6(ip6);
    if let Some(proxy_port) = redirect_target(&ctx, dst, port, AF_INET6) {
        // A v4-mapped destination (Java's habit) stays IPv4 on the wire, so it goes to the IPv4
        // listener; a real IPv6 destination goes to the IPv6 one.
        let target = if is_v4_mapped(&dst) {
            v4_mapped(LOOPBACK4)
        } else {
            LOOPBACK6
        };
        write_ip6(sa, &target);
        // SAFETY: write to user_port permitted in connect6.
        unsafe {
            core::ptr::write_volatile(&raw mut (*sa).user_port, u32::from(proxy_port.to_be()));
        }
    }
    ALLOW
}

/// Level of the agent's `--cgroup-root` in the cgroup2 hierarchy (the root cgroup is level 0),
/// set by the agent when it loads the programs.
#[unsafe(no_mangle)]
static CGROUP_ROOT_LEVEL: u32 = 0;

/// How many levels below the cgroup root a pod's cgroup may sit (kubepods/<qos>/pod<uid>).
const MAX_POD_DEPTH: u32 = 4;

/// The enrolled workload of the calling task: its own cgroup, or else the nearest enrolled
/// ancestor below the cgroup root. The fallback makes a container cgroup created under an
/// enrolled pod captured from its first connect, before the agent has seen the new cgroup.
#[inline(always)]
fn current_workload() -> Option<(*const Workload, u64)> {
    // SAFETY: helper available to cgroup_sock_addr programs.
    let own = unsafe { bpf_get_current_cgroup_id() };
    if let Some(w) = WORKLOADS.get_ptr(own) {
        return Some((w, own));
    }
    // SAFETY: reading a global the loader may have overridden; volatile so it is not folded.
    let root = unsafe { core::ptr::read_volatile(&raw const CGROUP_ROOT_LEVEL) };
    let mut depth = MAX_POD_DEPTH;
    while depth > 0 {
        // SAFETY: helper available to cgroup_sock_addr programs; 0 means "no such level".
        let id = unsafe { bpf_get_current_ancestor_cgroup_id((root + depth) as i32) };
        if id != 0
            && id != own
            && let Some(w) = WORKLOADS.get_ptr(id)
        {
            return Some((w, id));
        }
        depth -= 1;
    }
    None
}

/// Decides whether this connect is captured; if so records the original destination and returns
/// the outbound listener port of the caller's pod.
#[inline(always)]
fn redirect_target(
    ctx: &SockAddrContext,
    dst: [u8; 16],
    port_nbo: u32,
    family: u16,
) -> Option<u16> {
    let (workload, cgroup_id) = current_workload()?;
    let port = u16::from_be(port_nbo as u16);
    if is_loopback(&dst) || port_excluded(port, DIRECTION_OUTBOUND) {
        count(stat::CONNECT_PASSED);
        return None;
    }
    // SAFETY: helper available to cgroup_sock_addr programs; ctx is the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let orig = OrigDst {
        cgroup_id,
        ip: dst,
        port,
        family,
        _pad: 0,
    };
    if PENDING.insert(cookie, orig, 0).is_err() {
        // Cannot record where it was going: let the connect fail rather than escape capture.
        count(stat::CONNECT_PASSED);
        return Some(0);
    }
    count(stat::CONNECT_REDIRECTED);
    // SAFETY: pointer from a successful lookup of a plain hash map, valid during the program run.
    Some(unsafe { (*workload).outbound_port })
}

#[inline(always)]
fn write_ip6(sa: *mut bpf_sock_addr, ip: &[u8; 16]) {
    let words = to_ip6_words(ip);
    // SAFETY: 4-byte stores to user_ip6 are permitted in connect6; volatile keeps them 4-byte.
    unsafe {
        core::ptr::write_volatile(&raw mut (*sa).user_ip6[0], words[0]);
        core::ptr::write_volatile(&raw mut (*sa).user_ip6[1], words[1]);
        core::ptr::write_volatile(&raw mut (*sa).user_ip6[2], words[2]);
        core::ptr::write_volatile(&raw mut (*sa).user_ip6[3], words[3]);
    }
}
