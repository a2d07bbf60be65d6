//! Configuration sources and the handle that publishes snapshots atomically.
//!
//! [`ConfigHandle`] is the single interface between sources and the data path: a source calls
//! [`ConfigHandle::apply`] with a fresh [`Resources`]; readers call [`ConfigHandle::current`]. The
//! file source polls file mtimes and sizes every 250 ms (portable, no inotify limits, works with
//! ConfigMap symlink swaps), so changes land well within a second.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::diagnostic::Diagnostic;
use super::load::{config_files, load_path};
use super::model::Resources;
use super::settings::MeshSettings;
use super::snapshot::Snapshot;

/// How often the file source looks for changes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Shared access to the latest good snapshot. Cheap to clone.
#[derive(Clone)]
pub struct ConfigHandle {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<Snapshot>,
    /// Held while a snapshot is built and stored, so a settings change and a resources change
    /// never overwrite each other's result.
    settings: Mutex<MeshSettings>,
    changes: watch::Sender<u64>,
    last_error: Mutex<Option<Vec<Diagnostic>>>,
}

impl ConfigHandle {
    pub fn new(initial: Snapshot) -> Self {
        let settings = initial.settings.clone();
        let (changes, _) = watch::channel(0);
        let inner = Inner {
            current: ArcSwap::from_pointee(initial),
            settings: Mutex::new(settings),
            changes,
            last_error: Mutex::new(None),
        };
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The snapshot in force; keep the `Arc` for the whole connection decision.
    pub fn current(&self) -> Arc<Snapshot> {
        self.inner.current.load_full()
    }

    /// Receives a new generation number after each applied change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Indexes `resources` and swaps them in; readers see the old or the new snapshot, never a mix.
    pub fn apply(&self, resources: Resources, warnings: Vec<Diagnostic>) {
        let settings = self.lock_settings();
        let snapshot = Snapshot::build(resources, settings.clone(), warnings);
        self.inner.current.store(Arc::new(snapshot));
        drop(settings);
        *self.lock_error() = None;
        self.inner.changes.send_modify(|g| *g += 1);
    }

    /// Rebuilds the snapshot in force with new settings (a meshConfig change); later
    /// [`ConfigHandle::apply`] calls use them too. No-op when nothing changed.
    pub fn set_settings(&self, new: MeshSettings) {
        let mut settings = self.lock_settings();
        if *settings == new {
            return;
        }
        let old = self.current();
        let snapshot = Snapshot::build(old.resources.clone(), new.clone(), old.diagnostics.clone());
        self.inner.current.store(Arc::new(snapshot));
        *settings = new;
        drop(settings);
        self.inner.changes.send_modify(|g| *g += 1);
    }

    fn lock_settings(&self) -> std::sync::MutexGuard<'_, MeshSettings> {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failed reload; the last good snapshot stays in force.
    pub fn reject(&self, errors: Vec<Diagnostic>) {
        for e in &errors {
            tracing::error!(error = %e, "configuration rejected, keeping the last good one");
        }
        *self.lock_error() = Some(errors);
    }

    /// Errors of the most recent rejected reload, cleared by the next good one.
    pub fn last_error(&self) -> Option<Vec<Diagnostic>> {
        self.lock_error().clone()
    }

    fn lock_error(&self) -> std::sync::MutexGuard<'_, Option<Vec<Diagnostic>>> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// `--config PATH`: a file or directory loaded at start and polled for changes.
pub struct FileSource {
    path: PathBuf,
}

/// Files with their modification time and size: a change in any means reload.
/// Path, modification time, size and inode of every file: an atomic replace (rename) changes the
/// inode even when a same-sized rewrite lands within the filesystem's timestamp granularity.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64, u64)>;

impl FileSource {
    /// Loads `path`; fails when the initial configuration has errors (there is no last good one).
    pub fn load(
        path: &Path,
        settings: MeshSettings,
    ) -> Result<(Self, ConfigHandle), Vec<Diagnostic>> {
        let report = load_path(path);
        for w in &report.diagnostics {
            tracing::warn!(warning = %w, "configuration");
        }
        let snapshot = Snapshot::from_report(report, settings)?;
        Ok((
            Self {
                path: path.to_owned(),
            },
            ConfigHandle::new(snapshot),
        ))
    }

    /// Loads `path` and spawns the polling task on the current tokio runtime.
    pub fn start(path: &Path, settings: MeshSettings) -> Result<ConfigHandle, Vec<Diagnostic>> {
        let (source, handle) = Self::load(path, settings)?;
        tokio::spawn(source.run(handle.clone()));
        Ok(handle)
    }

    /// Polls until the handle's last subscriber and clone are gone.
    pub async fn run(self, handle: ConfigHandle) {
        let mut seen = fingerprint(&self.path);
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        loop {
            ticker.tick().await;
            if Arc::strong_count(&handle.inner) == 1 {
                return;
            }
            let now = fingerprint(&self.path);
            if now == seen {
                continue;
            }
            seen = now;
            self.reload(&handle);
        }
    }

    /// One reload attempt (also used by tests without a runtime).
    pub fn reload(&self, handle: &ConfigHandle) {
        let report = load_path(&self.path);
        if report.has_errors() {
            handle.reject(report.errors().cloned().collect());
        } else {
            tracing::info!(path = %self.path.display(), "configuration reloaded");
            handle.apply(report.resources, report.diagnostics);
        }
    }
}

fn fingerprint(path: &Path) -> Fingerprint {
    config_files(path)
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let mtime = meta.as_ref().and_then(|m| m.modified().ok());
            let (len, ino) = meta.map_or((0, 0), |m| {
                (m.len(), std::os::unix::fs::MetadataExt::ino(&m))
            });
            (f, mtime, len, ino)
        })
        .collect()
}

#[cfg(test)]
mod tests;
