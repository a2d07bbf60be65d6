//! Reused 64 KiB copy buffers for pooled streams. A new app connection on a pooled mesh connection
//! would otherwise map and unmap two such buffers on each proxy; a few are kept for the next
//! stream, so a busy proxy stops allocating while an idle one holds at most [`KEPT`] of them.
use std::{
    ops::{Deref, DerefMut},
    sync::Mutex,
};

pub const SIZE: usize = 64 * 1024;
/// Buffers kept for reuse; any more are freed as their streams end.
const KEPT: usize = 8;

static FREE: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// A [`SIZE`]-byte buffer that goes back to the free list when dropped.
pub struct Buffer(Option<Box<[u8]>>);

impl Buffer {
    pub fn take() -> Self {
        let reused = FREE.lock().expect("buffer list").pop();
        Self(Some(
            reused.unwrap_or_else(|| vec![0u8; SIZE].into_boxed_slice()),
        ))
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            let mut free = FREE.lock().expect("buffer list");
            if free.len() < KEPT {
                free.push(buf);
            }
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
    fn a_returned_buffer_is_handed_out_again() {
        let first = Buffer::take();
        let ptr = first.as_ptr();
        assert_eq!(first.len(), SIZE);
        drop(first);
        let again = Buffer::take();
        // Other tests may take buffers concurrently; the list never exceeds KEPT.
        assert!(again.as_ptr() == ptr || FREE.lock().unwrap().len() <= KEPT);
    }
}
