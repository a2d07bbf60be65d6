//! The non-blocking writer: a bounded channel drained by one thread that formats and writes.
use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
};

use prometheus_client::metrics::counter::Counter;
use tracing::warn;

use super::{AccessLogArgs, AccessLogEntry, Format, Output, format_json, format_text};

/// Handle the proxy records entries through; cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: SyncSender<AccessLogEntry>,
    dropped: Counter,
}

impl AccessLog {
    /// Opens the output and starts the writer thread; `None` when the log is off. `dropped` is
    /// incremented for every line lost because the buffer was full.
    pub fn start(args: &AccessLogArgs, dropped: Counter) -> io::Result<Option<Self>> {
        let out: Box<dyn Write + Send> = match &args.output {
            Output::Off => return Ok(None),
            Output::Stdout => Box::new(io::stdout()),
            Output::File(path) => {
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        let (tx, rx) = sync_channel(args.buffer.max(1));
        let format = args.format;
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(&rx, BufWriter::new(out), format))?;
        Ok(Some(Self { tx, dropped }))
    }

    /// Queues the line; never blocks.
    pub fn record(&self, entry: AccessLogEntry) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(entry)
        {
            self.dropped.inc();
        }
    }
}

/// Writes until every sender is gone, flushing whenever the queue runs empty.
fn write_loop(rx: &Receiver<AccessLogEntry>, mut out: impl Write, format: Format) {
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        let mut result = write_line(&mut out, &first, format);
        while let Ok(next) = rx.try_recv() {
            result = result.and(write_line(&mut out, &next, format));
        }
        result = result.and(out.flush());
        match result {
            Err(e) if !failing => {
                warn!(error = %e, "access log write failed; lines are being lost");
                failing = true;
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
    }
}

fn write_line(out: &mut impl Write, entry: &AccessLogEntry, format: Format) -> io::Result<()> {
    let mut line = match format {
        Format::Text => format_text(entry),
        Format::Json => format_json(entry),
    };
    line.push('\n');
    out.write_all(line.as_bytes())
}
