//! Typed access to the pinned maps from user space.
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use sockmesh_common::{OrigDst, is_v4_mapped};

/// The 16-byte map form of an address (IPv4 as IPv4-mapped IPv6).
pub fn addr_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// What `CONNS` says about a redirected connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalDst {
    pub addr: SocketAddr,
    pub cgroup_id: u64,
}

impl From<OrigDst> for OriginalDst {
    fn from(o: OrigDst) -> Self {
        let ip = if is_v4_mapped(&o.ip) {
            IpAddr::V4(
                Ipv6Addr::from(o.ip)
                    .to_ipv4_mapped()
                    .expect("checked v4-mapped"),
            )
        } else {
            IpAddr::V6(Ipv6Addr::from(o.ip))
        };
        Self {
            addr: SocketAddr::new(ip, o.port),
            cgroup_id: o.cgroup_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_come_back_as_ipv4() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let o = OrigDst {
            cgroup_id: 7,
            ip: addr_key(ip),
            port: 8080,
            family: 10,
            _pad: 0,
        };
        assert_eq!(
            OriginalDst::from(o),
            OriginalDst {
                addr: "10.1.2.3:8080".parse().unwrap(),
                cgroup_id: 7
            }
        );
        let ip6: IpAddr = "fd00::2".parse().unwrap();
        let o = OrigDst {
            cgroup_id: 7,
            ip: addr_key(ip6),
            port: 80,
            family: 10,
            _pad: 0,
        };
        assert_eq!(
            OriginalDst::from(o).addr,
            "[fd00::2]:80".parse::<SocketAddr>().unwrap()
        );
    }
}
