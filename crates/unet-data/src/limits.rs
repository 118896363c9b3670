//! The bound on what one image file may make the readers allocate, so that a damaged or hostile
//! file (a "decompression bomb": a few bytes declaring 100000 x 100000 pixels, or a million
//! pages) is refused before anything that size exists.

use std::sync::atomic::{AtomicU64, Ordering};

/// The default bound: 2^31 pixel values (samples) per file, 2 GiB as 8-bit, 8 GiB as float.
pub const DEFAULT_MAX_PIXELS: u64 = 1 << 31;

/// The environment variable that sets the bound for a process (`unet --max-pixels` too).
pub const MAX_PIXELS_ENV: &str = "UNET_MAX_PIXELS";

/// The most output bytes one compressed byte can stand for in the formats the readers accept
/// (LZW's longest code reaches 4096 bytes; deflate's ratio is at most 1032); a page declaring
/// more than this times the file's size is damaged, whatever the bound.
pub const MAX_COMPRESSION_RATIO: u64 = 4096;

/// 0: not set yet (the environment variable, else the default, is read on first use).
static MAX_PIXELS: AtomicU64 = AtomicU64::new(0);

/// The most pixel values (all pages and samples together) one file may hold.
pub fn max_pixels() -> u64 {
    match MAX_PIXELS.load(Ordering::Relaxed) {
        0 => {
            let from_env = std::env::var(MAX_PIXELS_ENV)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&n| n > 0);
            let n = from_env.unwrap_or(DEFAULT_MAX_PIXELS);
            MAX_PIXELS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Sets the bound for this process (at least 1).
pub fn set_max_pixels(n: u64) {
    MAX_PIXELS.store(n.max(1), Ordering::Relaxed);
}
