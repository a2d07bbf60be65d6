//! Waiting for what the agent reports asynchronously (metrics, access-log lines are written at
//! close and off the hot path).
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

/// Polls `f` every 100 ms until it returns true; fails after `timeout`.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if f()? {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "condition not met in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
