//! Clients inside pods: the legitimate mesh traffic the soak measures (probes, many concurrent
//! connections, a download) and the slowloris attacker.
use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::json;

use super::app::DOWNLOAD;
use super::{end_kind, unix_ms};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Threads that open the connections of `many`, each a share of them one after another.
const OPENERS: usize = 8;

/// One line out and its echo back.
fn exchange(conn: &mut BufReader<TcpStream>, msg: &str) -> io::Result<()> {
    writeln!(conn.get_mut(), "{msg}")?;
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if line.trim_end() != msg {
        return Err(io::Error::other(format!("echo of {msg:?} was {line:?}")));
    }
    Ok(())
}

fn open(addr: SocketAddr, timeout: Duration) -> io::Result<BufReader<TcpStream>> {
    let conn = TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(BufReader::new(conn))
}

pub fn probe(
    addr: SocketAddr,
    secs: f64,
    interval_ms: u64,
    timeout_ms: u64,
    same_connection: bool,
) -> Result<()> {
    let timeout = Duration::from_millis(timeout_ms);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut kept: Option<BufReader<TcpStream>> = None;
    let mut n = 0u64;
    while Instant::now() < end {
        let start_ms = unix_ms();
        let started = Instant::now();
        let result = match kept.take() {
            Some(conn) => Ok(conn),
            None => open(addr, timeout),
        }
        .and_then(|mut conn| exchange(&mut conn, &format!("probe-{n}")).map(|()| conn));
        let us = started.elapsed().as_micros();
        let outcome = match result {
            Ok(conn) => {
                if same_connection {
                    kept = Some(conn);
                }
                "ok"
            }
            Err(error) => end_kind(&error),
        };
        println!(
            "{}",
            json!({ "start_ms": start_ms, "us": us, "outcome": outcome })
        );
        n += 1;
        thread::sleep(Duration::from_millis(interval_ms));
    }
    Ok(())
}

pub fn many(addr: SocketAddr, count: usize, hold_secs: f64) -> Result<()> {
    let openers: Vec<_> = (0..OPENERS)
        .map(|k| {
            let share = count / OPENERS + usize::from(k < count % OPENERS);
            thread::spawn(move || {
                let mut open_ones = Vec::with_capacity(share);
                let mut failed: BTreeMap<&'static str, usize> = BTreeMap::new();
                for i in 0..share {
                    match open(addr, CONNECT_TIMEOUT)
                        .and_then(|mut c| exchange(&mut c, &format!("many-{k}-{i}")).map(|()| c))
                    {
                        Ok(conn) => open_ones.push(conn),
                        Err(error) => *failed.entry(end_kind(&error)).or_default() += 1,
                    }
                }
                (open_ones, failed)
            })
        })
        .collect();
    let mut held = Vec::with_capacity(count);
    let mut failed: BTreeMap<&'static str, usize> = BTreeMap::new();
    for opener in openers {
        let (open_ones, lost) = opener.join().expect("opener thread");
        held.extend(open_ones);
        for (kind, n) in lost {
            *failed.entry(kind).or_default() += n;
        }
    }
    println!("{}", json!({ "open": held.len(), "failed": failed }));
    thread::sleep(Duration::from_secs_f64(hold_secs));
    let closed = held.len();
    drop(held);
    println!("{}", json!({ "closed": closed }));
    Ok(())
}

pub fn download(addr: SocketAddr) -> Result<()> {
    let mut conn = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).context("connect")?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(conn, "{DOWNLOAD}")?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    let end = loop {
        match conn.read(&mut buf) {
            Ok(0) => break "eof",
            Ok(n) => {
                if bytes == 0 {
                    println!("receiving");
                }
                bytes += n as u64;
            }
            Err(error) => break end_kind(&error),
        }
    };
    println!("{}", json!({ "bytes": bytes, "end": end }));
    Ok(())
}

pub fn slowloris(addr: SocketAddr, count: usize, secs: f64) -> Result<()> {
    let mut conns = Vec::with_capacity(count);
    let mut open_failed = 0usize;
    for _ in 0..count {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(conn) => {
                conn.set_nonblocking(true)?;
                conns.push((conn, Instant::now()));
            }
            Err(_) => open_failed += 1,
        }
    }
    println!(
        "{}",
        json!({ "opened": conns.len(), "open_failed": open_failed })
    );
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut live: Vec<usize> = (0..conns.len()).collect();
    let mut cut_ms: Vec<u128> = Vec::new();
    let mut sink = [0u8; 4096];
    while Instant::now() < end && !live.is_empty() {
        let mut fds: Vec<libc::pollfd> = live
            .iter()
            .map(|&i| libc::pollfd {
                fd: conns[i].0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` holds valid pollfds for sockets `conns` keeps open.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if ready <= 0 {
            continue;
        }
        let mut still = Vec::with_capacity(live.len());
        for (&i, fd) in live.iter().zip(&fds) {
            let cut = fd.revents != 0
                && match (&conns[i].0).read(&mut sink) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(error) => error.kind() != io::ErrorKind::WouldBlock,
                };
            if cut {
                cut_ms.push(conns[i].1.elapsed().as_millis());
            } else {
                still.push(i);
            }
        }
        live = still;
    }
    cut_ms.sort_unstable();
    println!(
        "{}",
        json!({
            "cut": cut_ms.len(),
            "held": live.len(),
            "cut_p50_ms": cut_ms.get(cut_ms.len() / 2),
            "cut_max_ms": cut_ms.last(),
        })
    );
    Ok(())
}
