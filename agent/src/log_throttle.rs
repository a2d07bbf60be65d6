//! Rate-limited logging for lines a peer can trigger at will (refused connections, `accept` errors):
//! at most N lines per second per [`Throttle`], then one summary line
//! `suppressed K similar lines in the last second`. Only log lines are dropped: metrics count every
//! event, so counters stay exact whatever the log shows.
//!
//! One `Throttle` per kind of line, usually a `static` next to the call site, e.g. in the proxy's
//! refusal path and its accept loop:
//!
//! ```
//! use sockmesh_agent::log_throttled;
//! use sockmesh_agent::log_throttle::Throttle;
//!
//! static REFUSED: Throttle = Throttle::new("connection refused", 10);
//!
//! fn on_refusal(peer: std::net::SocketAddr, reason: &str) {
//!     // (count the refusal in the metrics first: that count is exact)
//!     log_throttled!(REFUSED, tracing::warn!(%peer, reason, "connection refused"));
//! }
//! # on_refusal("10.0.0.1:1234".parse().unwrap(), "plaintext_rejected");
//! ```
//!
//! `log_throttled!` evaluates the tracing call (and its arguments) only when the line is admitted.
//! The summary line is written by the first admitted line of a later second (there is no timer), at
//! WARN with the throttle's name, so a flood costs at most N + 1 lines a second.
//!
//! The hot path is lock-free: one atomic load when the second's budget is spent (the flood case),
//! one compare-and-swap otherwise. Seconds are fixed windows counted from the first use of any
//! throttle, so a burst across a window boundary may log up to 2N lines in one wall-clock second.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A budget of log lines per second for one kind of line. `const`-constructible, so it can be a
/// `static`.
#[derive(Debug)]
pub struct Throttle {
    name: &'static str,
    per_second: u32,
    /// `window << 32 | lines admitted in it`, where `window` is whole seconds since [`epoch`]
    /// plus one (0 = never used).
    state: AtomicU64,
    /// Lines suppressed and not yet reported by a summary.
    suppressed: AtomicU64,
}

impl Throttle {
    /// At most `per_second` lines a second; at least one, so that summaries get written (a
    /// `static` with 0 does not compile).
    pub const fn new(name: &'static str, per_second: u32) -> Self {
        assert!(
            per_second > 0,
            "a throttle must admit at least one line a second"
        );
        Throttle {
            name,
            per_second,
            state: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// What the summary line calls these lines.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether a line may be logged now. `Some(k)`: log it, after a summary of the `k` lines
    /// suppressed since the last summary when `k > 0`. `None`: drop it (it is counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(current_window())
    }

    fn admit_at(&self, window: u32) -> Option<u64> {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            let (seen, admitted) = ((state >> 32) as u32, state as u32);
            let (next, summary) = if seen != window {
                // First line of a new second: it may carry the previous seconds' summary.
                (u64::from(window) << 32 | 1, true)
            } else if admitted < self.per_second {
                (state + 1, false)
            } else {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            match self
                .state
                .compare_exchange_weak(state, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) if summary => return Some(self.suppressed.swap(0, Ordering::AcqRel)),
                Ok(_) => return Some(0),
                Err(now) => state = now,
            }
        }
    }
}

/// Seconds since the first use of any throttle, plus one (so that 0 means "never used").
fn current_window() -> u32 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = EPOCH.get_or_init(Instant::now);
    (epoch.elapsed().as_secs() as u32).wrapping_add(1).max(1)
}

/// Logs through a [`Throttle`]: `log_throttled!(THROTTLE, tracing::warn!(...))`. The tracing call
/// runs only when the throttle admits the line, preceded by the summary of suppressed lines.
#[macro_export]
macro_rules! log_throttled {
    ($throttle:expr, $event:expr) => {{
        let throttle: &$crate::log_throttle::Throttle = &$throttle;
        if let Some(suppressed) = throttle.admit() {
            if suppressed > 0 {
                ::tracing::warn!(
                    suppressed,
                    lines = throttle.name(),
                    "suppressed {suppressed} similar lines in the last second"
                );
            }
            $event;
        }
    }};
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn admits_n_per_window_then_reports_the_rest() {
        let t = Throttle::new("test", 3);
        let first: Vec<_> = (0..10).map(|_| t.admit_at(1)).collect();
        assert_eq!(first[..3], [Some(0), Some(0), Some(0)]);
        assert!(first[3..].iter().all(Option::is_none));
        // The next second's first line carries the summary of the 7 suppressed ones.
        assert_eq!(t.admit_at(2), Some(7));
        assert_eq!(t.admit_at(2), Some(0));
        // A quiet second later: nothing was suppressed in between.
        assert_eq!(t.admit_at(9), Some(0));
    }

    #[test]
    fn concurrent_callers_never_exceed_the_budget_and_lose_no_count() {
        let t = Arc::new(Throttle::new("test", 100));
        let admitted = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (t, admitted) = (t.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if t.admit_at(5).is_some() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(admitted.load(Ordering::Relaxed), 100);
        assert_eq!(t.admit_at(6), Some(40_000 - 100));
    }

    #[test]
    fn the_macro_evaluates_the_event_only_when_admitted() {
        static T: Throttle = Throttle::new("macro", 2);
        let mut logged = 0;
        for _ in 0..5 {
            log_throttled!(T, logged += 1);
        }
        assert_eq!(logged, 2);
        assert!(current_window() >= 1);
    }
}
