//! w(x) for all 30 ISBI 2012 training label sections (512x512), on 1 and 2 threads.
//!
//! Reads `train-labels.tif` from `$UNET_DATA`, else `data/isbi2012/` in the workspace
//! (`cargo xtask fetch-data` puts it there).
//! Each iteration computes all 30 sections, so the per-section time is the reported time / 30
//! (criterion's throughput line gives sections per second).
//!
//! The K = 3 case gives each ISBI cell class 1 or 2 (alternating in raster order), so its
//! instances are the binary case's cells and the two timings compare like for like.

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tiff::decoder::{Decoder, DecodingResult};
use unet_weights::{
    label_components, weight_map, weight_maps, ClassLabels, Connectivity, WeightMapParams,
};

struct Stack {
    pages: usize,
    height: usize,
    width: usize,
    labels: Vec<u8>,
}

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

fn read_labels() -> Stack {
    let path = data_dir().join("train-labels.tif");
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = Decoder::new(BufReader::new(file)).expect("a TIFF file");
    let (width, height) = decoder.dimensions().expect("dimensions");
    let mut labels = Vec::new();
    let mut pages = 0;
    loop {
        match decoder.read_image().expect("a page") {
            DecodingResult::U8(page) => labels.extend_from_slice(&page),
            _ => panic!("{}: expected 8-bit pages", path.display()),
        }
        pages += 1;
        if !decoder.more_images() {
            break;
        }
        decoder.next_image().expect("next page");
    }
    Stack {
        pages,
        height: height as usize,
        width: width as usize,
        labels,
    }
}

fn bench(c: &mut Criterion) {
    let stack = read_labels();
    let section = stack.height * stack.width;
    let params = WeightMapParams::default();
    let three_classes: Vec<Vec<u16>> = stack
        .labels
        .chunks_exact(section)
        .map(|page| {
            let cells = label_components(page, stack.height, stack.width, Connectivity::Four)
                .expect("valid input");
            cells
                .labels()
                .iter()
                .map(|&cell| if cell == 0 { 0 } else { 1 + (cell % 2) as u16 })
                .collect()
        })
        .collect();
    let valid = params.validate().expect("valid parameters");
    let mut group = c.benchmark_group("isbi_30_sections");
    group.sample_size(10);
    group.throughput(Throughput::Elements(stack.pages as u64));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        group.bench_function(format!("weight_map_per_section/threads={threads}"), |b| {
            b.iter(|| {
                pool.install(|| {
                    for page in stack.labels.chunks_exact(section) {
                        let weights = weight_map(page, stack.height, stack.width, &params);
                        std::hint::black_box(weights.expect("valid input"));
                    }
                })
            })
        });
        group.bench_function(format!("weight_maps_stack/threads={threads}"), |b| {
            b.iter(|| {
                pool.install(|| {
                    let weights = weight_maps(
                        &stack.labels,
                        stack.pages,
                        stack.height,
                        stack.width,
                        &params,
                    );
                    std::hint::black_box(weights.expect("valid input"))
                })
            })
        });
        group.bench_function(
            format!("class_weight_map_k3_per_section/threads={threads}"),
            |b| {
                b.iter(|| {
                    pool.install(|| {
                        for page in &three_classes {
                            let weights = valid.class_weight_map(
                                page,
                                stack.height,
                                stack.width,
                                &ClassLabels::new(3),
                            );
                            std::hint::black_box(weights.expect("valid input"));
                        }
                    })
                })
            },
        );
        group.bench_function(format!("label_components/threads={threads}"), |b| {
            b.iter(|| {
                pool.install(|| {
                    for page in stack.labels.chunks_exact(section) {
                        let components =
                            label_components(page, stack.height, stack.width, Connectivity::Four);
                        std::hint::black_box(components.expect("valid input"));
                    }
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
