//! Log set-up: `RUST_LOG`-style filter (default `info`), text to stderr. The filter sits behind a
//! reload layer so the admin API's `/logging` can change it at run time. Colour only on a terminal.
use std::{io::IsTerminal as _, sync::OnceLock};

use tracing_subscriber::{
    EnvFilter, Registry, filter::LevelFilter, fmt, layer::SubscriberExt, reload,
    util::SubscriberInitExt,
};

static CONTROL: OnceLock<LogControl> = OnceLock::new();

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, control) = reloadable(filter);
    tracing_subscriber::registry()
        .with(layer)
        .with(
            fmt::layer()
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr),
        )
        .init();
    let _ = CONTROL.set(control);
}

/// The control of the subscriber installed by [`init`], if it ran.
pub fn control() -> Option<LogControl> {
    CONTROL.get().cloned()
}

/// Wraps `filter` in a reload layer (to put under a subscriber) and returns its control.
pub fn reloadable(filter: EnvFilter) -> (reload::Layer<EnvFilter, Registry>, LogControl) {
    let initial = filter.to_string();
    let (layer, handle) = reload::Layer::new(filter);
    (layer, LogControl { handle, initial })
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid level {0:?}: expected trace, debug, info, warn, error or off")]
    Level(String),
    #[error("invalid filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("cannot reload the log filter: {0}")]
    Reload(#[from] reload::Error),
}

/// Reads and replaces the active log filter.
#[derive(Clone, Debug)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    initial: String,
}

impl LogControl {
    /// The active filter directives, e.g. `info,sockmesh_agent::proxy=debug`.
    pub fn current(&self) -> String {
        self.handle
            .with_current(ToString::to_string)
            .unwrap_or_default()
    }

    /// Sets one level for everything.
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        level
            .parse::<LevelFilter>()
            .map_err(|_| LogError::Level(level.to_owned()))?;
        self.set_filter(level)
    }

    /// Replaces the filter with `RUST_LOG`-style directives.
    pub fn set_filter(&self, directives: &str) -> Result<(), LogError> {
        let filter = EnvFilter::try_new(directives)?;
        self.handle.reload(filter)?;
        Ok(())
    }

    /// Back to the filter the agent started with.
    pub fn reset(&self) -> Result<(), LogError> {
        self.set_filter(&self.initial.clone())
    }
}
