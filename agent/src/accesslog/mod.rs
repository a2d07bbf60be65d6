//! Access log: one line per connection at close (or refusal), as text or JSON. Lines are
//! formatted and written on a dedicated thread; the proxy only does a non-blocking channel send
//! and, when the writer falls behind, drops the line and counts it.
mod format;
mod writer;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    flow::{ByteCount, ConnectionInfo},
    metrics::{RefusalReason, ResponseFlags},
};

pub use format::{format_json, format_text};
pub use writer::AccessLog;

/// Line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `key=value` pairs, one connection per line.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Off,
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for Output {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "off" | "none" => Self::Off,
            "-" | "stdout" => Self::Stdout,
            path => Self::File(PathBuf::from(path)),
        })
    }
}

/// Access-log flags of `sockmesh run` (flattened into `RunArgs`).
#[derive(Clone, Debug, clap::Args)]
pub struct AccessLogArgs {
    /// Access log destination: `stdout`, `off`, or a file path (appended to).
    #[arg(long = "access-log", default_value = "stdout")]
    pub output: Output,
    /// Access log line format.
    #[arg(long = "access-log-format", value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Lines buffered for the writer before new ones are dropped.
    #[arg(long = "access-log-buffer", default_value_t = 8192)]
    pub buffer: usize,
}

/// One finished (closed or refused) connection.
#[derive(Clone, Debug)]
pub struct AccessLogEntry {
    pub end: SystemTime,
    /// Tracker id; refused connections were never tracked.
    pub id: Option<u64>,
    pub info: Arc<ConnectionInfo>,
    pub bytes: ByteCount,
    pub duration: Duration,
    pub response_flags: ResponseFlags,
    pub reason: Option<RefusalReason>,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests;
