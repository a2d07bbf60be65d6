//! Reused 64 KiB copy buffers for tunnel streams. A new app connection on a tunnel would otherwise
//! map and unmap two such buffers on each proxy; a few are kept for the next stream, so a busy
//! proxy stops allocating while an idle one holds at most [`KEPT`] of them per worker thread. The
//! free lists are per thread, so taking and returning a buffer never contends on a lock.
use std::{
    cell::RefCell,
    ops::{Deref, DerefMut},
};

pub const SIZE: usize = 64 * 1024;
/// The buffer of a connection that is not moving bulk data.
pub const SMALL: usize = 4 * 1024;
/// Buffers kept for reuse per thread; any more are freed as their streams end.
const KEPT: usize = 8;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A [`SIZE`]-byte buffer that goes back to the free list when dropped.
pub struct Buffer(Option<Box<[u8]>>);

impl Buffer {
    pub fn take() -> Self {
        let reused = FREE.with_borrow_mut(Vec::pop);
        Self(Some(
            reused.unwrap_or_else(|| vec![0u8; SIZE].into_boxed_slice()),
        ))
    }
}

/// A copy buffer sized to what its connection moves: [`SMALL`] bytes, owned, while reads are
/// small (an idle or chatty connection holds a few KiB); a pooled [`SIZE`] buffer after a read
/// fills the small one (bulk), given back when reads are small again.
pub struct AdaptiveBuffer {
    small: Box<[u8]>,
    large: Option<Buffer>,
}

impl AdaptiveBuffer {
    pub fn new() -> Self {
        Self {
            small: vec![0u8; SMALL].into_boxed_slice(),
            large: None,
        }
    }

    /// The buffer to read into.
    pub fn get(&mut self) -> &mut [u8] {
        match self.large.as_mut() {
            Some(large) => large,
            None => &mut self.small,
        }
    }

    /// Adapts to a read of `n` bytes; `filled` says it took all the room the buffer had. A read
    /// that fills the small buffer means bulk; a small read while large means the bulk ended.
    pub fn read(&mut self, n: usize, filled: bool) {
        match self.large {
            None if filled => self.large = Some(Buffer::take()),
            Some(_) if n < SMALL => self.large = None,
            _ => {}
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            FREE.with_borrow_mut(|free| {
                if free.len() < KEPT {
                    free.push(buf);
                }
            });
        }
    }
}

impl Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().expect("present until dropped")
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().expect("present until dropped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_buffer_grows_under_bulk_and_gives_the_large_buffer_back() {
        let mut buf = AdaptiveBuffer::new();
        assert_eq!(buf.get().len(), SMALL);
        buf.read(100, false);
        assert_eq!(buf.get().len(), SMALL);
        buf.read(SMALL, true);
        assert_eq!(buf.get().len(), SIZE);
        buf.read(SIZE, true);
        assert_eq!(buf.get().len(), SIZE);
        buf.read(10, false);
        assert_eq!(buf.get().len(), SMALL);
    }

    #[test]
    fn a_returned_buffer_is_handed_out_again() {
        let first = Buffer::take();
        let ptr = first.as_ptr();
        assert_eq!(first.len(), SIZE);
        drop(first);
        let again = Buffer::take();
        assert_eq!(again.as_ptr(), ptr);
        drop(again);
        let many: Vec<Buffer> = (0..KEPT + 4).map(|_| Buffer::take()).collect();
        drop(many);
        assert_eq!(FREE.with_borrow(Vec::len), KEPT);
    }
}
