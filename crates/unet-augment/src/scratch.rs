//! A per-thread pool of f32 buffers, so the large temporaries of a sample (noise, the padded
//! plane of the Gaussian, displacement fields) are reused from sample to sample instead of being
//! allocated, page-faulted and freed each time.
//!
//! Results never depend on it: a taken buffer's contents are unspecified and every user
//! overwrites what it reads. Each rayon worker has its own pool, so there is no locking.

use std::cell::RefCell;

/// Buffers kept per thread at most (a pipeline with several elastic steps uses a few more;
/// those are then simply freed).
const MAX_POOLED: usize = 8;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` f32 values with unspecified contents (the caller overwrites them).
pub(crate) fn take(len: usize) -> Vec<f32> {
    let reused = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        // The smallest buffer that fits, else the largest (grown once, then reused).
        let fits = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= len)
            .min_by_key(|&i| pool[i].capacity());
        let best = fits.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()))?;
        Some(pool.swap_remove(best))
    });
    let mut buffer = reused.unwrap_or_default();
    buffer.resize(len, 0.0);
    buffer
}

/// Return a buffer to this thread's pool.
pub(crate) fn give(buffer: Vec<f32>) {
    if buffer.capacity() == 0 {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < MAX_POOLED {
            pool.push(buffer);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_with_the_requested_length() {
        let a = take(100);
        assert_eq!(a.len(), 100);
        let capacity = a.capacity();
        give(a);
        let b = take(10);
        assert_eq!(b.len(), 10);
        assert!(b.capacity() >= capacity.min(10));
        let c = take(1000);
        assert_eq!(c.len(), 1000);
        give(b);
        give(c);
    }
}
