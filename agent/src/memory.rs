//! The allocator's side of the agent's memory: settings made at start, and a periodic trim so
//! that memory freed after a burst of connections goes back to the kernel instead of staying in
//! glibc's arenas (10,000 connections left ~240 MB resident after they closed without it).
use std::time::{Duration, Instant};

/// How often freed heap memory is handed back.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// glibc gives every thread that allocates its own arena, and freed connection buffers stay
/// resident in each; two arenas keep the proxy's memory close to what its connections use. The
/// 64 KiB connection buffers are mapped on their own (a fixed threshold, so glibc does not raise
/// it), which returns them to the kernel when a connection ends and leaves the pages a short
/// exchange never touches out of the resident set.
pub fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator settings; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// Hands free heap memory back to the kernel every [`TRIM_EVERY`], until the task is aborted.
pub async fn trim_periodically() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let started = Instant::now();
        // SAFETY: malloc_trim only releases free memory at the top of the heaps and in free
        // pages; it is thread-safe.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(released = released != 0, took = ?started.elapsed(), "malloc_trim");
    }
}
