//! Client and server run inside test pods. Every answer is one JSON line so tests can assert on
//! who saw which addresses.
//!
//! ```text
//! pod-tool serve PORT [--only v4|v6] [--name NAME]   echo server: per line received, replies
//!                                                    {"server","peer","local","msg"}
//! pod-tool connect ADDR MSG [--timeout SECS]         prints the reply, or {"error":KIND,"detail"}
//!                                                    and exits 1
//! pod-tool connect-many ADDR N [--msg M] [--timeout SECS]
//!                                                    N connections open at once, then one exchange
//!                                                    each; prints {"ok":n,"failed":{KIND:count}}
//! pod-tool hold ADDR SECS [--interval SECS] [--timeout SECS]
//!                                                    one connection kept open for SECS, an exchange
//!                                                    every interval; prints "connected" once open,
//!                                                    then {"ok":exchanges} or {"error",...} (exit 1)
//! pod-tool sleep [SECS]                              does nothing (default: forever)
//! ```

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use serde_json::json;
use socket2::{Domain, Protocol, Socket, Type};

const USAGE: &str = "usage: pod-tool serve PORT [--only v4|v6] [--name NAME] | connect ADDR MSG [--timeout SECS] | connect-many ADDR N [--msg M] [--timeout SECS] | hold ADDR SECS [--interval SECS] [--timeout SECS] | sleep [SECS]";
/// Many connections each get a thread; small stacks keep 1,000 of them cheap.
const STACK: usize = 64 * 1024;

fn main() -> ExitCode {
    raise_fd_limit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("connect") => connect(&args[1..]),
        Some("connect-many") => connect_many(&args[1..]),
        Some("hold") => hold(&args[1..]),
        Some("sleep") => sleep(&args[1..]),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("pod-tool: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Positional arguments and `--flag value` options.
struct Args {
    positional: Vec<String>,
    options: BTreeMap<String, String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut out = Args {
        positional: Vec::new(),
        options: BTreeMap::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.strip_prefix("--") {
            Some(flag) => {
                let value = it.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                out.options.insert(flag.to_owned(), value.clone());
            }
            None => out.positional.push(a.clone()),
        }
    }
    Ok(out)
}

impl Args {
    fn pos<T: std::str::FromStr>(&self, i: usize, what: &str) -> Result<T, String> {
        let raw = self
            .positional
            .get(i)
            .ok_or_else(|| format!("missing {what}; {USAGE}"))?;
        raw.parse().map_err(|_| format!("bad {what}: {raw}"))
    }

    fn timeout(&self) -> Result<Duration, String> {
        let secs: f64 = match self.options.get("timeout") {
            Some(t) => t.parse().map_err(|_| format!("bad --timeout: {t}"))?,
            None => 5.0,
        };
        Ok(Duration::from_secs_f64(secs))
    }
}

fn serve(args: &[String]) -> Result<ExitCode, String> {
    let args = parse(args)?;
    let port: u16 = args.pos(0, "PORT")?;
    let name = args.options.get("name").cloned().unwrap_or_default();
    let only = args.options.get("only").map(String::as_str);
    let mut addrs = Vec::new();
    if only != Some("v6") {
        addrs.push(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    if only != Some("v4") {
        addrs.push(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
    }
    let mut accepters = Vec::new();
    for addr in addrs {
        let listener = bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        let name = name.clone();
        accepters.push(thread::spawn(move || accept_loop(listener, &name)));
    }
    // The test bed waits for this line before it lets a test connect.
    println!("listening on port {port}");
    io::stdout().flush().map_err(|e| e.to_string())?;
    for a in accepters {
        let _ = a.join();
    }
    Ok(ExitCode::SUCCESS)
}

/// Binds with IPV6_V6ONLY on the v6 socket, so IPv4 clients reach the v4 socket and every address
/// reported is in its own family.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

fn accept_loop(listener: TcpListener, name: &str) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let name = name.to_owned();
        let spawned = thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || echo(conn, &name));
        if let Err(e) = spawned {
            eprintln!("pod-tool: no thread for connection: {e}");
        }
    }
}

/// Answers every line of one connection until the peer closes it.
fn echo(conn: TcpStream, name: &str) {
    let (Ok(peer), Ok(local)) = (conn.peer_addr(), conn.local_addr()) else {
        return;
    };
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(msg) = line else { return };
        let reply = json!({"server": name, "peer": peer, "local": local, "msg": msg});
        if writeln!(writer, "{reply}").is_err() {
            return;
        }
    }
}

/// One request/response exchange.
fn exchange(addr: SocketAddr, msg: &str, timeout: Duration) -> io::Result<String> {
    let conn = TcpStream::connect_timeout(&addr, timeout)?;
    request(conn, msg, timeout)
}

fn request(mut conn: TcpStream, msg: &str, timeout: Duration) -> io::Result<String> {
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    writeln!(conn, "{msg}")?;
    let mut line = String::new();
    if BufReader::new(conn).read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end().to_owned())
}

/// The failure names the library's `FailKind` parses.
fn kind(e: &io::Error) -> &'static str {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "refused",
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => "reset",
        K::TimedOut | K::WouldBlock => "timeout",
        K::UnexpectedEof => "closed",
        K::HostUnreachable | K::NetworkUnreachable => "unreachable",
        _ => "other",
    }
}

fn connect(args: &[String]) -> Result<ExitCode, String> {
    let args = parse(args)?;
    let addr: SocketAddr = args.pos(0, "ADDR")?;
    let msg: String = args.pos(1, "MSG")?;
    match exchange(addr, &msg, args.timeout()?) {
        Ok(reply) => {
            println!("{reply}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{}", json!({"error": kind(&e), "detail": e.to_string()}));
            Ok(ExitCode::from(1))
        }
    }
}

fn connect_many(args: &[String]) -> Result<ExitCode, String> {
    let args = parse(args)?;
    let addr: SocketAddr = args.pos(0, "ADDR")?;
    let n: usize = args.pos(1, "N")?;
    let msg = args
        .options
        .get("msg")
        .cloned()
        .unwrap_or_else(|| "hello".to_owned());
    let timeout = args.timeout()?;
    // All connections are established before any is used, so N are open at the same time.
    let barrier = Arc::new(Barrier::new(n));
    let mut workers = Vec::with_capacity(n);
    for _ in 0..n {
        let (barrier, msg) = (barrier.clone(), msg.clone());
        let worker = thread::Builder::new().stack_size(STACK).spawn(move || {
            let conn = TcpStream::connect_timeout(&addr, timeout);
            barrier.wait();
            request(conn?, &msg, timeout)
        });
        workers.push(worker.map_err(|e| format!("spawn thread: {e}"))?);
    }
    let mut ok = 0usize;
    let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
    for w in workers {
        match w.join() {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => *failed.entry(kind(&e)).or_default() += 1,
            Err(_) => *failed.entry("other").or_default() += 1,
        }
    }
    println!("{}", json!({"ok": ok, "failed": failed}));
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn hold(args: &[String]) -> Result<ExitCode, String> {
    let args = parse(args)?;
    let addr: SocketAddr = args.pos(0, "ADDR")?;
    let secs: f64 = args.pos(1, "SECS")?;
    let interval: f64 = match args.options.get("interval") {
        Some(i) => i.parse().map_err(|_| format!("bad --interval: {i}"))?,
        None => 0.2,
    };
    let timeout = args.timeout()?;
    let mut exchanges = 0u64;
    let result = (|| -> io::Result<()> {
        let conn = TcpStream::connect_timeout(&addr, timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        let mut writer = conn.try_clone()?;
        let mut reader = BufReader::new(conn);
        println!("connected");
        io::stdout().flush()?;
        let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
        while std::time::Instant::now() < end {
            let msg = format!("hold-{exchanges}");
            writeln!(writer, "{msg}")?;
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if !line.contains(&format!("\"{msg}\"")) {
                return Err(io::Error::other(format!("echo of {msg} was {line:?}")));
            }
            exchanges += 1;
            thread::sleep(Duration::from_secs_f64(interval));
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            println!("{}", json!({"ok": exchanges}));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let failure = json!({"error": kind(&e), "detail": e.to_string(), "ok": exchanges});
            println!("{failure}");
            Ok(ExitCode::from(1))
        }
    }
}

fn sleep(args: &[String]) -> Result<ExitCode, String> {
    let args = parse(args)?;
    match args.positional.first() {
        Some(_) => thread::sleep(Duration::from_secs_f64(args.pos(0, "SECS")?)),
        None => loop {
            thread::park();
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Lifts the soft open-file limit to the hard one: 1,000 concurrent connections need it.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
