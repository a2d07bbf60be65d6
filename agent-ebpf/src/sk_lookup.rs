//! sk_lookup: steer TCP connections arriving for an enrolled pod's addresses to the proxy's
//! inbound listener in that pod's network namespace.
use aya_ebpf::{macros::sk_lookup, programs::SkLookupContext};
use sockmesh_common::{Addr, DIRECTION_INBOUND, stat};

use crate::{
    addr::{ctx_read, from_ip4, from_ip6},
    maps::{INBOUND_LISTENERS, POD_ADDRS, count, port_excluded},
};

const SK_DROP: u32 = 0;
const SK_PASS: u32 = 1;
const AF_INET: u32 = 2;
const IPPROTO_TCP: u32 = 6;

#[sk_lookup]
pub fn sk_lookup_steer(ctx: SkLookupContext) -> u32 {
    let l = ctx.lookup;
    let (family, protocol, port) = (
        ctx_read!(l, family),
        ctx_read!(l, protocol),
        ctx_read!(l, local_port),
    );
    if protocol != IPPROTO_TCP {
        return SK_PASS;
    }
    // Read every field up front, unconditionally: the verifier rejects context loads through a
    // pointer LLVM derived before a branch.
    let (local4, remote4) = (ctx_read!(l, local_ip4), ctx_read!(l, remote_ip4));
    let local6 = [
        ctx_read!(l, local_ip6[0]),
        ctx_read!(l, local_ip6[1]),
        ctx_read!(l, local_ip6[2]),
        ctx_read!(l, local_ip6[3]),
    ];
    let remote6 = [
        ctx_read!(l, remote_ip6[0]),
        ctx_read!(l, remote_ip6[1]),
        ctx_read!(l, remote_ip6[2]),
        ctx_read!(l, remote_ip6[3]),
    ];
    let (local, remote) = if family == AF_INET {
        (from_ip4(local4), from_ip4(remote4))
    } else {
        (from_ip6(local6), from_ip6(remote6))
    };
    // The proxy reaches the app from inside the pod with the pod's own address as source; so does
    // an app calling itself. Both go straight to the app.
    if local == remote {
        return SK_PASS;
    }
    let key = Addr { ip: local };
    if POD_ADDRS.get_ptr(key).is_none() || port_excluded(port as u16, DIRECTION_INBOUND) {
        count(stat::LOOKUP_PASSED);
        return SK_PASS;
    }
    if INBOUND_LISTENERS.redirect_sk_lookup(&ctx, key, 0).is_ok() {
        count(stat::LOOKUP_STEERED);
        return SK_PASS;
    }
    // Enrolled pod but no proxy listener (proxy down): fail the lookup so nothing reaches the app
    // unenforced. The kernel answers the SYN with a reset (no socket), so the client is refused
    // until the proxy is back.
    count(stat::LOOKUP_DROPPED_NO_PROXY);
    SK_DROP
}
