//! Zero-copy forwarding between two plain TCP sockets: `splice(2)` through a pipe per direction,
//! so bytes that are not encrypted never cross into user space.
use std::{
    io,
    net::Shutdown,
    os::fd::{AsFd, OwnedFd},
};

use nix::{
    fcntl::{OFlag, SpliceFFlags, splice},
    unistd::pipe2,
};
use tokio::{io::Interest, net::TcpStream};

use crate::connections::Counted;

/// Bytes moved per splice call: the default pipe capacity.
const CHUNK: usize = 64 * 1024;

/// Forwards both ways until both directions reach EOF (each EOF becomes a write shutdown of the
/// other socket) or one fails. Bytes are counted on the downstream's telemetry wrapper.
pub async fn splice_bidirectional(down: &Counted<TcpStream>, up: &TcpStream) -> io::Result<()> {
    let to_up = pump(down.get_ref(), up, |n| down.add_received(n));
    let to_down = pump(up, down.get_ref(), |n| down.add_sent(n));
    tokio::try_join!(to_up, to_down).map(|_| ())
}

/// One direction: fill the pipe from `from`, drain it into `to`, repeat. The pipe is always empty
/// when reading and non-empty when writing, so EAGAIN always means the socket is not ready.
async fn pump(from: &TcpStream, to: &TcpStream, counted: impl Fn(u64)) -> io::Result<()> {
    let (pipe_out, pipe_in): (OwnedFd, OwnedFd) =
        pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(io::Error::from)?;
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(from.as_fd(), None, pipe_in.as_fd(), None, CHUNK, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
                Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
                _ => Ok(()),
            };
        }
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe_out.as_fd(), None, to.as_fd(), None, left, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        counted(n as u64);
    }
}
