//! sockops: publish {original destination, cgroup id} for established redirected connections.
use aya_ebpf::{
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
    },
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::sock_ops,
    programs::SockOpsContext,
};
use sockmesh_common::{ConnKey, stat};

use crate::{
    addr::{ctx_read, from_ip4, from_ip6},
    maps::{CONNS, PENDING, count},
};

const AF_INET: u32 = 2;
const TCP_CLOSE: u32 = 7;

#[sock_ops]
pub fn sock_ops_cb(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => publish(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == TCP_CLOSE => forget(&ctx),
        _ => {}
    }
    1
}

/// Moves the PENDING entry of a redirected socket to CONNS under the key the proxy can compute
/// from the accepted socket, and asks for a state callback so the entry is removed on close.
#[inline(always)]
fn publish(ctx: &SockOpsContext) {
    // SAFETY: helper available to sock_ops programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    let Some(orig) = PENDING.get_ptr(cookie) else {
        return;
    };
    // SAFETY: pointer from a successful map lookup, valid during the program run.
    let orig = unsafe { *orig };
    let key = conn_key(ctx);
    if CONNS.insert(key, orig, 0).is_ok() {
        count(stat::SOCKOPS_PUBLISHED);
    }
    let _ = PENDING.remove(cookie);
    let _ = ctx.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG as i32);
}

#[inline(always)]
fn forget(ctx: &SockOpsContext) {
    if CONNS.remove(conn_key(ctx)).is_ok() {
        count(stat::SOCKOPS_CLOSED);
    }
}

/// The client socket's (netns cookie, local address, local port): what the proxy sees as the
/// peer of the accepted socket in the same namespace.
#[inline(always)]
fn conn_key(ctx: &SockOpsContext) -> ConnKey {
    // SAFETY: helper available to sock_ops programs.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.ops.cast()) };
    let ops = ctx.ops;
    // Read every field up front, unconditionally: the verifier rejects context loads through a
    // pointer LLVM derived before a branch.
    let family = ctx_read!(ops, family);
    let ip4 = ctx_read!(ops, local_ip4);
    let ip6 = [
        ctx_read!(ops, local_ip6[0]),
        ctx_read!(ops, local_ip6[1]),
        ctx_read!(ops, local_ip6[2]),
        ctx_read!(ops, local_ip6[3]),
    ];
    let port = ctx_read!(ops, local_port);
    let ip = if family == AF_INET {
        from_ip4(ip4)
    } else {
        from_ip6(ip6)
    };
    ConnKey {
        netns_cookie,
        ip,
        port: port as u16,
        _pad: [0; 6],
    }
}
