//! Mutation fuzzing of the TIFF stack, label, class-label, channel, streaming section
//! ([`TiffSections`]) and PNG readers: every mutant of a valid small file is read to `Ok` or a
//! typed error, never a panic, and within an allocation bound.
//! `UNET_FUZZ_CASES=N` sets the mutants per reader (`cargo xtask fuzz` runs many); inputs that
//! once failed live in `tests/bad/fuzz/` and are read on every run.

mod common;

use std::io::Cursor;
use std::path::Path;

use tiff::encoder::{colortype, Compression, TiffEncoder};
use unet_data::fuzz::{self, CountingAllocator};
use unet_data::{
    decode_channels, decode_class_labels, decode_labels, decode_png_grey, decode_stack,
    encode_png_grey, LabelOptions, TiffSections,
};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The readers' bound while fuzzing: 4 M pixel values a file.
const MAX_PIXELS: u64 = 1 << 22;
/// What one input may allocate: the bound's pixels as f32, a copy or two, the decoder's buffers.
const MAX_BYTES: usize = 256 << 20;

/// A small stack of `pages` pages of `h x w`, `C`'s pixel type, with `compression`.
fn tiff_of<C: colortype::ColorType>(
    pages: usize,
    h: u32,
    w: u32,
    compression: Compression,
    value: impl Fn(usize) -> C::Inner,
) -> Vec<u8>
where
    [C::Inner]: tiff::encoder::TiffValue,
{
    let mut out = Cursor::new(Vec::new());
    {
        let mut enc = TiffEncoder::new(&mut out)
            .unwrap()
            .with_compression(compression);
        for p in 0..pages {
            let n = (h * w) as usize * C::SAMPLE_FORMAT.len().max(1);
            let data: Vec<C::Inner> = (0..n).map(|i| value(i + p * 7)).collect();
            enc.write_image::<C>(w, h, &data).unwrap();
        }
    }
    out.into_inner()
}

/// The committed malformed files and the inputs that once failed, as further seeds.
fn bad_files() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut files = fuzz::files_in(&root);
    files.extend(fuzz::files_in(&root.join("fuzz")));
    files
}

fn tiff_seeds() -> Vec<Vec<u8>> {
    let mut seeds = vec![
        tiff_of::<colortype::Gray8>(3, 12, 16, Compression::Uncompressed, |i| {
            (i * 37 % 256) as u8
        }),
        tiff_of::<colortype::Gray8>(2, 9, 7, Compression::Lzw, |i| (i / 5 % 256) as u8),
        tiff_of::<colortype::Gray8>(2, 8, 8, Compression::Packbits, |i| (i / 9) as u8),
        tiff_of::<colortype::Gray16>(2, 10, 6, Compression::Uncompressed, |i| {
            (i * 2711 % 65536) as u16
        }),
        tiff_of::<colortype::Gray32Float>(2, 5, 9, Compression::Uncompressed, |i| i as f32 / 50.0),
        tiff_of::<colortype::RGB8>(1, 6, 6, Compression::Uncompressed, |i| (i * 11) as u8),
    ];
    seeds.extend(bad_files());
    seeds
}

#[test]
fn every_reader_gives_a_value_or_a_typed_error_on_mutated_files() {
    unet_data::set_max_pixels(MAX_PIXELS);
    let cases = fuzz::cases(1500);
    let path = Path::new("fuzz.tif");
    let seeds = tiff_seeds();
    fuzz::run("tiff-stack", &seeds, cases, 1, MAX_BYTES, |b| {
        decode_stack(b, path).map(|_| ())
    })
    .assert_clean();
    let labels = vec![
        tiff_of::<colortype::Gray8>(2, 10, 10, Compression::Uncompressed, |i| {
            if i % 3 == 0 {
                0
            } else {
                255
            }
        }),
        tiff_of::<colortype::Gray16>(1, 6, 8, Compression::Lzw, |i| (i % 2) as u16),
    ];
    fuzz::run("labels", &labels, cases, 2, MAX_BYTES, |b| {
        decode_labels(b, path).map(|_| ())
    })
    .assert_clean();
    let class_options = [
        LabelOptions::default(),
        LabelOptions {
            classes: Some(3),
            ignore: Some(255),
        },
    ];
    fuzz::run("class-labels", &labels, cases, 4, MAX_BYTES, |b| {
        class_options
            .iter()
            .try_for_each(|o| decode_class_labels(b, path, o).map(|_| ()))
    })
    .assert_clean();
    let mut channel_seeds = seeds.clone();
    channel_seeds.extend([
        common::planar_rgb16(3, 4, &[(0..36).collect(), (36..72).collect()]),
        common::described::<colortype::Gray16>(
            4,
            5,
            &(0..6u16).map(|k| vec![k; 20]).collect::<Vec<_>>(),
            &common::imagej(2, 3),
        ),
        common::described::<colortype::Gray8>(
            2,
            3,
            &(0..6u8).map(|k| vec![k; 6]).collect::<Vec<_>>(),
            &common::ome("XYZCT", 2, 3, 2, 3),
        ),
    ]);
    fuzz::run("channels", &channel_seeds, cases, 5, MAX_BYTES, |b| {
        decode_channels(b, path).map(|_| ())
    })
    .assert_clean();
    // The streaming reader reads a file: each mutant is written to one, then every section read.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fuzz.tif");
    fuzz::run("tiff-sections", &channel_seeds, cases, 6, MAX_BYTES, |b| {
        std::fs::write(&file, b).unwrap();
        let mut sections = TiffSections::open(&file)?;
        (0..sections.sections()).try_for_each(|s| sections.read_unit_section(s).map(|_| ()))
    })
    .assert_clean();
    let pngs = vec![
        encode_png_grey(11, 13, &(0..143).map(|i| (i * 7) as u8).collect::<Vec<_>>()).unwrap(),
        encode_png_grey(1, 1, &[200]).unwrap(),
    ];
    fuzz::run("png", &pngs, cases, 3, MAX_BYTES, |b| {
        decode_png_grey(b, "fuzz.png").map(|_| ())
    })
    .assert_clean();
}

#[test]
fn files_declaring_more_pixels_than_the_bound_are_refused_before_reading() {
    // A 4-page stack whose first page claims 100000 x 100000 pixels: patch the width and
    // length of the first directory (tags 256, 257, stored as u32 or u16 values).
    let mut bomb = tiff_of::<colortype::Gray8>(4, 8, 8, Compression::Uncompressed, |i| i as u8);
    let ifd = u32::from_le_bytes(bomb[4..8].try_into().unwrap()) as usize;
    let entries = u16::from_le_bytes(bomb[ifd..ifd + 2].try_into().unwrap()) as usize;
    for e in 0..entries {
        let at = ifd + 2 + 12 * e;
        let tag = u16::from_le_bytes(bomb[at..at + 2].try_into().unwrap());
        if tag == 256 || tag == 257 {
            // Type LONG (4), count 1, value 100000.
            bomb[at + 2..at + 4].copy_from_slice(&4u16.to_le_bytes());
            bomb[at + 8..at + 12].copy_from_slice(&100_000u32.to_le_bytes());
        }
    }
    let err = decode_stack(&bomb, Path::new("bomb.tif"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bomb.tif page 0") && err.contains("declares 10000000000 pixel values"),
        "{err}"
    );
    assert!(err.contains("--max-pixels"), "{err}");
}
