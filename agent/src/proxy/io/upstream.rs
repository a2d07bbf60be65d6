//! Upstream connections made from inside a pod's network namespace, so they leave with the pod's
//! own address. The proxy's cgroup is never enrolled, so connect4/6 let them through.
use std::{io, net::SocketAddr, time::Duration};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::netns::Netns;

pub async fn connect_in(
    netns: &Netns,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = netns
        .run(|| Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP)))??;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    let socket = TcpSocket::from_std_stream(socket.into());
    tokio::time::timeout(timeout, socket.connect(dst))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {dst} timed out"),
            )
        })?
}
