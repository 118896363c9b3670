//! Overlap-tile prediction with the `small` preset (random weights) on the CPU: time per image and
//! peak memory.
//!
//! ```text
//! cargo bench -p unet-model --bench predict -- --warm-up-time 1 --measurement-time 3
//! UNET_BENCH_LARGE=1 cargo bench -p unet-model --bench predict -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Before timing, each image size is predicted once and its peak heap use (a counting global
//! allocator: the most bytes live at once during the call, above what was live before it) and
//! the process's VmHWM (peak resident set so far) are printed. With `UNET_BENCH_LARGE=1` a
//! 2048x2048 image is measured too (once: it takes minutes on 2 cores), to show that memory is
//! bounded by the tile batch, not by the image size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use unet_model::{overlap_tile_predict, TileOptions, UNet, UNetConfig};

/// The system allocator, counting live bytes and their peak.
struct PeakAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only observe.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let live = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static GLOBAL: PeakAlloc = PeakAlloc;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The process's peak resident set (VmHWM) in MiB, where /proc exists.
fn vm_hwm_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn small_model() -> UNet {
    UNet::seeded(&UNetConfig::small(), 1, &Device::Cpu).expect("the small preset builds")
}

/// A textured, roughly standardised test image.
fn image(size: usize) -> Vec<f32> {
    (0..size * size)
        .map(|i| {
            let (y, x) = ((i / size) as f32, (i % size) as f32);
            (y * 0.05).sin() * (x * 0.07).cos() + 0.3 * ((x + y) * 0.31).sin()
        })
        .collect()
}

/// Predicts once and prints time, peak heap above the baseline and VmHWM.
fn report_memory(model: &UNet, size: usize, opts: &TileOptions) {
    let img = image(size);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    let p = overlap_tile_predict(model, &img, size, size, opts).expect("prediction");
    let secs = start.elapsed().as_secs_f64();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    black_box(p);
    let hwm = vm_hwm_mib().map_or("n/a".to_string(), |m| format!("{m:.0} MiB"));
    eprintln!(
        "predict {size}x{size} (small preset, tile {}, overlap {}, batch {}): {secs:.2} s, \
         peak heap {:.0} MiB (image {:.1} MiB), process VmHWM so far {hwm}",
        opts.output_tile,
        opts.overlap,
        opts.batch_size,
        mib(peak),
        mib(size * size * 4),
    );
}

fn predict(c: &mut Criterion) {
    let model = small_model();
    let opts = TileOptions::default();
    report_memory(&model, 512, &opts);
    let large = std::env::var_os("UNET_BENCH_LARGE").is_some();
    if large {
        report_memory(&model, 2048, &opts);
    }
    let mut group = c.benchmark_group("predict");
    group.sample_size(10);
    let img = image(512);
    group.bench_function("small_512x512", |b| {
        b.iter(|| overlap_tile_predict(&model, black_box(&img), 512, 512, &opts).unwrap())
    });
    let single = TileOptions {
        output_tile: 512,
        batch_size: 1,
        ..opts
    };
    group.bench_function("small_512x512_one_tile", |b| {
        b.iter(|| overlap_tile_predict(&model, black_box(&img), 512, 512, &single).unwrap())
    });
    group.finish();
}

criterion_group!(benches, predict);
criterion_main!(benches);
