//! Spare full-image buffers kept per thread, so that computing one map after another does not
//! fault fresh pages in from the kernel every time (that cost about a quarter of the run time).

use std::cell::RefCell;

/// Spare buffers kept per thread, at most.
const MAX_SPARES: usize = 4;
/// Buffers larger than this (in elements: 64 MiB of u32) are freed rather than kept.
const MAX_SPARE_LEN: usize = 1 << 24;

thread_local! {
    static SPARES: RefCell<Vec<Vec<u32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` copies of `value`, reusing a spare one where there is one.
pub(crate) fn take(len: usize, value: u32) -> Vec<u32> {
    let mut buffer = SPARES
        .with(|spares| spares.borrow_mut().pop())
        .unwrap_or_default();
    buffer.clear();
    buffer.resize(len, value);
    buffer
}

/// Keeps `buffer` as a spare for this thread's next [`take`].
pub(crate) fn recycle(buffer: Vec<u32>) {
    if buffer.capacity() == 0 || buffer.capacity() > MAX_SPARE_LEN {
        return;
    }
    SPARES.with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.len() < MAX_SPARES {
            spares.push(buffer);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_buffers_are_filled_whatever_they_held() {
        let mut buffer = take(10, 7);
        assert_eq!(buffer, vec![7; 10]);
        buffer[3] = 1;
        recycle(buffer);
        assert_eq!(take(12, 9), vec![9; 12]);
        assert_eq!(take(0, 9), Vec::<u32>::new());
    }
}
