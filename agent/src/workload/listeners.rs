//! Listeners the proxy opens inside a pod's network namespace.
//!
//! Outbound: `127.0.0.1:<outbound>` and `[::1]:<outbound>`, where connect4/6 send the pod's
//! connections. Inbound: `127.0.0.1:<inbound>` and `[::1]:<inbound>`, handed connections for the
//! pod's addresses by sk_lookup (the bind address does not matter to sk_lookup).
//!
//! Hand-over between agents (rolling update): every listener has `SO_REUSEPORT`, so a new agent
//! binds beside the old one, and the pod's namespace gets `net.ipv4.tcp_migrate_req=1`, so when
//! the old agent closes its listeners the connections still queued on them move to the new
//! agent's listeners instead of being reset.
use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd as _,
};

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tracing::warn;

use crate::netns::Netns;

const BACKLOG: i32 = 4096;
/// Per-namespace sysctl (Linux 5.14+): migrate queued connections of a closed listener to another
/// listener of its `SO_REUSEPORT` group. Opened inside the pod's namespace, so it sets the pod's.
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
/// Per-namespace sysctl: reuse TIME_WAIT sockets for new outgoing connections when safe (TCP
/// timestamps). The proxy's upstream sockets to the app and to other nodes leave from the pod's
/// namespace; without it, ~20k short connections a minute to one destination use up the ephemeral
/// ports in TIME_WAIT. The kernel's default (2) reuses them on loopback only.
const TW_REUSE: &str = "/proc/sys/net/ipv4/tcp_tw_reuse";
/// `SO_NETNS_COOKIE` (Linux 5.14+), not exported by libc yet.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The listeners of one pod.
pub struct PodListeners {
    pub outbound_v4: TcpListener,
    pub outbound_v6: Option<TcpListener>,
    pub inbound_v4: TcpListener,
    pub inbound_v6: Option<TcpListener>,
    pub netns_cookie: u64,
}

impl PodListeners {
    /// Binds all listeners inside `netns`. IPv6 is optional: a namespace without `::1` gets IPv4
    /// listeners only.
    pub fn bind(netns: &Netns, outbound_port: u16, inbound_port: u16) -> anyhow::Result<Self> {
        let v4 = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let v6 = |port| SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        let (migrate, tw_reuse, out4, out6, in4, in6) = netns.run(|| {
            (
                std::fs::write(MIGRATE_REQ, "1"),
                std::fs::write(TW_REUSE, "1"),
                listen(v4(outbound_port)),
                listen(v6(outbound_port)),
                listen(v4(inbound_port)),
                listen(v6(inbound_port)),
            )
        })?;
        if let Err(e) = migrate {
            warn!(netns = %netns.path().display(), error = %e, "cannot enable {MIGRATE_REQ}: a restart may reset queued connections");
        }
        if let Err(e) = tw_reuse {
            warn!(netns = %netns.path().display(), error = %e, "cannot enable {TW_REUSE}: many short connections may exhaust ephemeral ports");
        }
        let out4 = out4.with_context(|| {
            format!(
                "binding {} in {}",
                v4(outbound_port),
                netns.path().display()
            )
        })?;
        let in4 = in4.with_context(|| {
            format!("binding {} in {}", v4(inbound_port), netns.path().display())
        })?;
        let netns_cookie = netns_cookie(&out4)?;
        let optional_v6 = |l: io::Result<std::net::TcpListener>, port| match l {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(netns = %netns.path().display(), port, error = %e, "no IPv6 listener in pod");
                None
            }
        };
        let out6 = optional_v6(out6, outbound_port);
        let in6 = optional_v6(in6, inbound_port);
        Ok(Self {
            outbound_v4: TcpListener::from_std(out4)?,
            outbound_v6: out6.map(TcpListener::from_std).transpose()?,
            inbound_v4: TcpListener::from_std(in4)?,
            inbound_v6: in6.map(TcpListener::from_std).transpose()?,
            netns_cookie,
        })
    }
}

fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// The cookie of the namespace a socket lives in, as `bpf_get_netns_cookie` reports it.
fn netns_cookie(socket: &std::net::TcpListener) -> anyhow::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd, out-pointer to a u64 and its length.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("getsockopt(SO_NETNS_COOKIE)");
    }
    Ok(cookie)
}
