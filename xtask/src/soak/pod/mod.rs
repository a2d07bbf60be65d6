//! The soak's programs inside the pods: the application it counts at, the legitimate mesh
//! clients, and the attackers. `cargo xtask soak` runs them as `xtask soak-pod <tool>` in a pod's
//! cgroup and netns (so a mesh pod's connects are captured, an outside pod's are not); each prints
//! JSON lines that the soak reads back from the process log.
mod app;
mod attack;
mod clients;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;

pub use attack::Attack;

/// One program; the arguments are the soak's, not meant to be typed by hand.
#[derive(Debug, clap::Subcommand)]
pub enum Tool {
    /// The application: counts every accepted connection (`{"accept":port}`), echoes lines, and
    /// streams bytes to a client that asks with `download`, then says how the stream ended.
    App {
        #[arg(long, value_delimiter = ',')]
        ports: Vec<u16>,
    },
    /// Connect, one exchange, close, every `interval_ms` for `secs`; one JSON line per attempt.
    /// With `--same-connection`, every exchange goes over one connection.
    Probe {
        addr: SocketAddr,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        #[arg(long)]
        same_connection: bool,
    },
    /// `count` connections open at once (one exchange each), held `hold_secs`, then closed.
    Many {
        addr: SocketAddr,
        count: usize,
        #[arg(long)]
        hold_secs: f64,
    },
    /// Asks the application for an endless stream and says how it ended.
    Download { addr: SocketAddr },
    /// `count` idle connections held for `secs`; says how many the other side cut, and when.
    Slowloris {
        addr: SocketAddr,
        count: usize,
        #[arg(long)]
        secs: f64,
    },
    /// `count` connection attempts of one hostile kind; TLS kinds read `<kind>.pem` (leaf and
    /// chain) and `<kind>-key.pem` from `cert_dir`, and with `--pooled` take the pooled path.
    Attack {
        addr: SocketAddr,
        #[arg(long, value_enum)]
        kind: Attack,
        count: usize,
        #[arg(long)]
        cert_dir: PathBuf,
        #[arg(long)]
        pooled: bool,
    },
}

pub fn run(tool: Tool) -> Result<()> {
    match tool {
        Tool::App { ports } => app::serve(&ports),
        Tool::Probe {
            addr,
            secs,
            interval_ms,
            timeout_ms,
            same_connection,
        } => clients::probe(addr, secs, interval_ms, timeout_ms, same_connection),
        Tool::Many {
            addr,
            count,
            hold_secs,
        } => clients::many(addr, count, hold_secs),
        Tool::Download { addr } => clients::download(addr),
        Tool::Slowloris { addr, count, secs } => clients::slowloris(addr, count, secs),
        Tool::Attack {
            addr,
            kind,
            count,
            cert_dir,
            pooled,
        } => attack::run(addr, kind, count, &cert_dir, pooled),
    }
}

/// How a connection ended or failed, in the words the soak's table uses.
pub fn end_kind(error: &io::Error) -> &'static str {
    use io::ErrorKind as K;
    match error.kind() {
        K::ConnectionRefused => "refused",
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => "reset",
        K::TimedOut | K::WouldBlock => "timeout",
        K::UnexpectedEof => "eof",
        _ => "other",
    }
}

/// Milliseconds since the Unix epoch: the soak lines tool events up with its own (kill, restart).
pub fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
