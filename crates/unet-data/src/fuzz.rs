//! Mutation fuzzing on stable Rust, for every reader of the workspace (feature `fuzzing`, for
//! tests and `cargo xtask fuzz`).
//!
//! [`run`] takes valid small inputs, mutates them ([`mutate`]: bit flips, bytes set to edge
//! values, truncations, inserted, deleted and repeated ranges, 16- and 32-bit fields patched with
//! edge values as a TIFF tag's count or offset would be), and feeds each mutant to a reader. A
//! reader must return `Ok` or a typed error: a panic is caught and reported with the input saved,
//! and with [`CountingAllocator`] as the test binary's global allocator, each input's peak
//! allocation is measured against a bound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The environment variable with the number of mutants per target (tests use a small default).
pub const CASES_ENV: &str = "UNET_FUZZ_CASES";

/// The mutants per target: `UNET_FUZZ_CASES`, else `default`.
pub fn cases(default: usize) -> usize {
    std::env::var(CASES_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes in use and their peak. Declare it as the global
/// allocator of a fuzzing test binary to bound each input's allocations.
pub struct CountingAllocator;

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on as it is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let now = CURRENT.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// A small seeded generator (xorshift64*) for the mutations.
#[derive(Debug, Clone)]
pub struct FuzzRng(u64);

impl FuzzRng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        FuzzRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Values that break size arithmetic: zero, one, signed and unsigned edges.
const EDGES_32: [u32; 8] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
];

/// Texts that break a JSON reader's numbers and types.
const JSON_EDGES: [&str; 10] = [
    "0",
    "-1",
    "1e308",
    "-1e308",
    "18446744073709551616",
    "4294967296",
    "null",
    "\"x\"",
    "[]",
    "{}",
];

/// One to four random mutations of `input`.
pub fn mutate(input: &[u8], rng: &mut FuzzRng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = [0u8, 0xff, 0x7f, 0x80, 1][rng.below(5)];
            }
            2 if len > 0 => out.truncate(rng.below(len)),
            3 => {
                let at = rng.below(len + 1);
                let n = 1 + rng.below(64);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(at..at, bytes);
            }
            4 if len > 1 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(64)).min(len);
                out.drain(from..to);
            }
            5 if len > 1 => {
                let from = rng.below(len);
                let to = (from + 1 + rng.below(256)).min(len);
                let copy = out[from..to].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, copy);
            }
            6 if len >= 2 => {
                let i = rng.below(len - 1);
                let v = EDGES_32[rng.below(EDGES_32.len())] as u16;
                out[i..i + 2].copy_from_slice(&v.to_le_bytes());
            }
            7 if len >= 4 => {
                // A 4-aligned field, as TIFF's counts and offsets are in little-endian files.
                let i = rng.below(len / 4) * 4;
                let v = EDGES_32[rng.below(EDGES_32.len())];
                let bytes = match rng.below(2) {
                    0 => v.to_le_bytes(),
                    _ => v.to_be_bytes(),
                };
                out[i..i + 4].copy_from_slice(&bytes);
            }
            8 if len > 0 => {
                // A number of a text (JSON) replaced by an edge value or another type.
                let start = rng.below(len);
                if let Some(first) = out[start..].iter().position(u8::is_ascii_digit) {
                    let from = start + first;
                    let n = out[from..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'-'))
                        .count();
                    let edge = JSON_EDGES[rng.below(JSON_EDGES.len())].as_bytes();
                    out.splice(from..from + n, edge.iter().copied());
                }
            }
            _ => {}
        }
    }
    out
}

/// What a fuzzing run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The target's name.
    pub target: String,
    /// Inputs fed (the seeds themselves included).
    pub cases: usize,
    /// Inputs the reader accepted.
    pub accepted: usize,
    /// Inputs it refused with an error.
    pub refused: usize,
    /// Inputs that panicked: the saved file and the panic message.
    pub panics: Vec<(PathBuf, String)>,
    /// Inputs whose allocations went over the bound: the saved file and the peak in bytes.
    pub over_bound: Vec<(PathBuf, usize)>,
    /// The largest peak allocation of one input, in bytes (0 without [`CountingAllocator`]).
    pub max_peak_bytes: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {}: {} inputs, {} accepted, {} refused with an error, {} panics, {} over the \
             allocation bound, largest peak {:.1} MB",
            self.target,
            self.cases,
            self.accepted,
            self.refused,
            self.panics.len(),
            self.over_bound.len(),
            self.max_peak_bytes as f64 / 1e6
        )
    }
}

impl Report {
    /// Prints the report and fails (panics, for a test) if an input panicked or went over the
    /// allocation bound, naming the saved inputs.
    pub fn assert_clean(&self) {
        println!("{self}");
        assert!(self.panics.is_empty(), "{self}: {:?}", self.panics);
        assert!(self.over_bound.is_empty(), "{self}: {:?}", self.over_bound);
    }
}

/// The files of `dir` (none when it does not exist), by name: committed malformed inputs and
/// ones that once failed, read as further seeds.
pub fn files_in(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths
        .iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// Where failing inputs are saved: `$UNET_FUZZ_OUT`, else the system's temporary directory.
fn save_failure(target: &str, case: usize, input: &[u8]) -> PathBuf {
    let dir = std::env::var_os("UNET_FUZZ_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("unet-fuzz"));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{case}.bin"));
    let _ = std::fs::write(&path, input);
    path
}

/// Feeds `seeds` and `cases` mutants of them (seeded by `seed`) to `reader`; each input's peak
/// allocation may exceed what was in use before it by at most `max_bytes`.
pub fn run<E>(
    target: &str,
    seeds: &[Vec<u8>],
    cases: usize,
    seed: u64,
    max_bytes: usize,
    reader: impl Fn(&[u8]) -> Result<(), E>,
) -> Report {
    assert!(!seeds.is_empty(), "fuzzing needs at least one valid input");
    let mut report = Report {
        target: target.to_string(),
        ..Report::default()
    };
    let mut rng = FuzzRng::new(seed);
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for case in 0..seeds.len() + cases {
        let input = match seeds.get(case) {
            Some(s) => s.clone(),
            None => mutate(&seeds[rng.below(seeds.len())], &mut rng),
        };
        let before = CURRENT.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let outcome = catch_unwind(AssertUnwindSafe(|| reader(&input)));
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        report.max_peak_bytes = report.max_peak_bytes.max(peak);
        report.cases += 1;
        match outcome {
            Ok(Ok(())) => report.accepted += 1,
            Ok(Err(_)) => report.refused += 1,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                report
                    .panics
                    .push((save_failure(target, case, &input), message));
            }
        }
        if peak > max_bytes {
            report
                .over_bound
                .push((save_failure(target, case, &input), peak));
        }
    }
    std::panic::set_hook(quiet);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutants_differ_and_depend_on_the_seed_only() {
        let input: Vec<u8> = (0..100).collect();
        let a: Vec<_> = (0..20)
            .scan(FuzzRng::new(3), |r, _| Some(mutate(&input, r)))
            .collect();
        let b: Vec<_> = (0..20)
            .scan(FuzzRng::new(3), |r, _| Some(mutate(&input, r)))
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().filter(|m| **m != input).count() >= 15, "{a:?}");
    }

    #[test]
    fn panics_are_caught_and_counted() {
        let report = run(
            "unit",
            &[vec![1, 2, 3]],
            50,
            1,
            usize::MAX,
            |bytes: &[u8]| -> Result<(), ()> {
                if bytes.len() > 3 {
                    panic!("too long");
                }
                if bytes.is_empty() {
                    return Err(());
                }
                Ok(())
            },
        );
        assert_eq!(report.cases, 51);
        assert_eq!(
            report.accepted + report.refused + report.panics.len(),
            report.cases
        );
        assert!(!report.panics.is_empty());
        assert_eq!(report.panics[0].1, "too long");
    }
}
