//! The application in the server pod. It is where "reached the app" is counted: one
//! `{"accept":port}` line per accepted connection, whatever the agent let through.
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;

use anyhow::{Context as _, Result};
use serde_json::json;

use super::end_kind;

/// A thread per connection; small stacks keep 10,000 of them cheap.
const STACK: usize = 64 * 1024;
/// What a client sends to be streamed to instead of echoed.
pub const DOWNLOAD: &str = "download";
static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

pub fn serve(ports: &[u16]) -> Result<()> {
    let mut accepters = Vec::new();
    for &port in ports {
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let listener = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
        accepters.push(thread::spawn(move || accept_loop(&listener, port)));
    }
    println!("listening on {ports:?}");
    for accepter in accepters {
        let _ = accepter.join();
    }
    Ok(())
}

fn accept_loop(listener: &TcpListener, port: u16) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        println!("{}", json!({ "accept": port }));
        let spawned = thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || serve_one(conn, port));
        if let Err(error) = spawned {
            eprintln!("no thread for a connection: {error}");
        }
    }
}

/// Echoes every line, or streams until the connection breaks when the first line asks for it.
fn serve_one(conn: TcpStream, port: u16) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        if line.trim_end() == DOWNLOAD {
            drop(writer);
            let end = stream(reader.into_inner());
            println!("{}", json!({ "download_end": end, "port": port }));
            return;
        }
        if writer.write_all(line.as_bytes()).is_err() {
            return;
        }
        line.clear();
    }
}

/// Writes until the connection breaks and says how it ended, from one thread that watches both
/// directions: the first thing seen wins. A peer that closes cleanly sends FIN, which makes the
/// socket readable and reads as `eof` before any write can fail; an abnormal end is a reset.
/// (Two threads would race for the socket's one pending error.)
fn stream(conn: TcpStream) -> &'static str {
    if conn.set_nonblocking(true).is_err() {
        return "other";
    }
    let mut pollfd = libc::pollfd {
        fd: conn.as_raw_fd(),
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    let mut sink = [0u8; 4096];
    loop {
        // SAFETY: one valid pollfd for a descriptor `conn` keeps open.
        if unsafe { libc::poll(&mut pollfd, 1, -1) } < 0 {
            return end_kind(&io::Error::last_os_error());
        }
        if pollfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match (&conn).read(&mut sink) {
                Ok(0) => return "eof",
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return end_kind(&error),
            }
        }
        if pollfd.revents & libc::POLLOUT != 0 {
            match (&conn).write(&CHUNK) {
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return end_kind(&error),
            }
        }
    }
}
