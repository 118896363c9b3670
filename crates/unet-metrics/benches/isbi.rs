//! The ISBI scores of the 30 training sections (real labels, a synthetic prediction) over the
//! 10 thresholds. Needs the data: `$UNET_DATA`, else `data/isbi2012/` in the workspace
//! (`cargo xtask fetch-data` puts it there).

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use tiff::decoder::{Decoder, DecodingResult};
use unet_metrics::{isbi_scores, score_stack, IsbiOptions, ScoreOptions};

/// The data directory by the project's one rule, `unet_data::locate_data_dir` (inline: this
/// crate depends on no other unet crate): `$UNET_DATA`, else `data/isbi2012` in the workspace.
fn data_dir() -> PathBuf {
    std::env::var_os("UNET_DATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/isbi2012"))
        })
}

/// All pages of an 8-bit TIFF stack: (pixels, pages, height, width).
fn read_stack(path: &PathBuf) -> Option<(Vec<u8>, usize, usize, usize)> {
    let mut decoder = Decoder::new(BufReader::new(File::open(path).ok()?)).ok()?;
    let (w, h) = decoder.dimensions().ok()?;
    let mut pixels = Vec::new();
    let mut pages = 0;
    loop {
        match decoder.read_image().ok()? {
            DecodingResult::U8(page) => pixels.extend_from_slice(&page),
            _ => return None,
        }
        pages += 1;
        if !decoder.more_images() {
            break;
        }
        decoder.next_image().ok()?;
    }
    Some((pixels, pages, h as usize, w as usize))
}

/// A plausible prediction: the labels box-blurred (radius 2) plus uniform noise of +-0.2.
fn synthetic_prediction(labels: &[u8], pages: usize, h: usize, w: usize) -> Vec<f32> {
    let mut state = 0x2012_u64;
    let mut out = vec![0f32; labels.len()];
    for p in 0..pages {
        let page = &labels[p * h * w..(p + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0.0;
                let mut n = 0.0;
                for yy in y.saturating_sub(2)..(y + 3).min(h) {
                    for xx in x.saturating_sub(2)..(x + 3).min(w) {
                        sum += f32::from(page[yy * w + xx]) / 255.0;
                        n += 1.0;
                    }
                }
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = (state >> 40) as f32 / (1u64 << 24) as f32 * 0.4 - 0.2;
                out[p * h * w + y * w + x] = (sum / n + noise).clamp(0.0, 1.0);
            }
        }
    }
    out
}

/// User + system CPU time of this process (Linux `/proc/self/stat`, 100 ticks a second).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn bench(c: &mut Criterion) {
    let path = data_dir().join("train-labels.tif");
    let Some((labels, pages, h, w)) = read_stack(&path) else {
        eprintln!("skipping: cannot read {}", path.display());
        return;
    };
    let prob = synthetic_prediction(&labels, pages, h, w);
    let thinned_only = IsbiOptions {
        unthinned: false,
        ..IsbiOptions::default()
    };
    let report = score_stack(&prob, &labels, pages, h, w, &ScoreOptions::default()).unwrap();
    eprintln!("synthetic prediction scores: {}", report.to_json());

    // The shared machine is often busy; process CPU time says what the work costs on 2 idle cores.
    if let Some(before) = cpu_seconds() {
        let wall = std::time::Instant::now();
        let runs = 3;
        for _ in 0..runs {
            isbi_scores(&prob, &labels, pages, h, w, &thinned_only).unwrap();
        }
        let cpu = cpu_seconds().unwrap_or(before) - before;
        eprintln!(
            "thinned, 30 sections x 10 thresholds: {:.3} s wall, {:.3} CPU-s per run \
             ({:.3} s on 2 idle cores)",
            wall.elapsed().as_secs_f64() / f64::from(runs),
            cpu / f64::from(runs),
            cpu / f64::from(runs) / 2.0,
        );
    }

    let mut group = c.benchmark_group("isbi");
    group.sample_size(10);
    group.bench_function("30x512x512_10_thresholds_thinned", |b| {
        b.iter(|| isbi_scores(&prob, &labels, pages, h, w, &thinned_only).unwrap())
    });
    group.bench_function("score_stack_thinned_and_unthinned", |b| {
        b.iter(|| score_stack(&prob, &labels, pages, h, w, &ScoreOptions::default()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
