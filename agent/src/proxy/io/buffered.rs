//! The socket under a TLS stream, read in large chunks.
//!
//! rustls asks for at most 4 KiB per `read_tls`, so a bulk transfer would cost a read syscall per
//! 4 KiB; a 64 KiB buffer in front of the socket makes it one per 64 KiB. Writes pass through.
use tokio::{io::BufReader, net::TcpStream};

const READ_BUFFER: usize = 64 * 1024;

pub type BufferedTcp = BufReader<TcpStream>;

pub fn buffered(tcp: TcpStream) -> BufferedTcp {
    BufReader::with_capacity(READ_BUFFER, tcp)
}
