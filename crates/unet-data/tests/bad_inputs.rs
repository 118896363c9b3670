//! Every malformed input gets its own clear error. The bad files live in `tests/bad/`; they are
//! small and committed, and `UNET_REGENERATE_BAD=1 cargo test -p unet-data --test bad_inputs`
//! rewrites them.

use std::path::{Path, PathBuf};

use unet_data::{check_pair, read_labels, read_stack, read_u8_stack, AnyStack, Error, Stack};

fn bad(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bad")
        .join(name)
}

fn tiny_tiff(pages: &[(usize, usize, u8)]) -> Vec<u8> {
    // Pages of different sizes cannot be one `Stack`, so encode them directly.
    use tiff::encoder::{colortype::Gray8, TiffEncoder};
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut enc = TiffEncoder::new(&mut out).unwrap();
        for &(h, w, fill) in pages {
            let data: Vec<u8> = (0..h * w).map(|i| fill.wrapping_add(i as u8 % 2)).collect();
            enc.write_image::<Gray8>(w as u32, h as u32, &data).unwrap();
        }
    }
    out.into_inner()
}

#[test]
fn regenerate_bad_files_when_asked() {
    if std::env::var_os("UNET_REGENERATE_BAD").is_none() {
        return;
    }
    let write = |name: &str, bytes: &[u8]| std::fs::write(bad(name), bytes).unwrap();
    write("empty.tif", b"");
    write(
        "not-a-tiff.tif",
        b"P5\n8 8\n255\nthis is a PGM, not a TIFF\n",
    );
    let two_pages = tiny_tiff(&[(8, 8, 0), (8, 8, 10)]);
    // The pixel data of the second page is cut off.
    write("truncated.tif", &two_pages[..two_pages.len() - 60]);
    write("mixed-sizes.tif", &tiny_tiff(&[(8, 8, 0), (4, 8, 0)]));
    let mut labels = [255u8; 3 * 8 * 8];
    labels[64 + 8 * 3 + 5] = 37;
    labels[10] = 0;
    let mut enc = std::io::Cursor::new(Vec::new());
    {
        use tiff::encoder::{colortype::Gray8, TiffEncoder};
        let mut e = TiffEncoder::new(&mut enc).unwrap();
        for p in labels.chunks(64) {
            e.write_image::<Gray8>(8, 8, p).unwrap();
        }
    }
    write("labels-value-37.tif", &enc.into_inner());
    write("images-3-pages.tif", &tiny_tiff(&[(8, 8, 0); 3]));
    unet_data::write_stack(
        bad("labels-2-pages.tif"),
        &Stack::new(2, 8, 8, vec![255u8; 128]).unwrap(),
    )
    .unwrap();
    unet_data::write_stack(
        bad("labels-float.tif"),
        &Stack::new(1, 8, 8, vec![1.0f32; 64]).unwrap(),
    )
    .unwrap();
}

#[test]
fn empty_file() {
    let e = read_stack(bad("empty.tif")).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e:?}");
    assert!(e.to_string().contains("empty.tif: empty file"), "{e}");
}

#[test]
fn not_a_tiff() {
    let e = read_stack(bad("not-a-tiff.tif")).unwrap_err();
    assert!(matches!(e, Error::NotTiff { .. }), "{e:?}");
    assert!(
        e.to_string().contains("not-a-tiff.tif: not a TIFF file"),
        "{e}"
    );
}

#[test]
fn truncated_tiff() {
    let e = read_stack(bad("truncated.tif")).unwrap_err();
    assert!(
        matches!(e, Error::Truncated { .. } | Error::Tiff { .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("truncated.tif page"), "{msg}");
}

#[test]
fn pages_of_different_sizes() {
    let e = read_stack(bad("mixed-sizes.tif")).unwrap_err();
    match &e {
        Error::PageMismatch { page, .. } => assert_eq!(*page, 1),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("mixed-sizes.tif page 1: 8x4"), "{e}");
}

#[test]
fn label_with_other_value() {
    let e = read_labels(bad("labels-value-37.tif")).unwrap_err();
    assert!(
        e.to_string()
            .contains("labels-value-37.tif page 1: value 37 is not a label (expected 0 or 255;"),
        "{e}"
    );
}

#[test]
fn planar_samples_read_as_interleaved_not_called_truncated() {
    // Written by tifffile: one 4x5 page, 3 samples stored as separate planes holding
    // 0..20, 20..40 and 40..60. Once refused; read since the channel readers (#23).
    let AnyStack::U8(s) = read_stack(bad("planar-3-samples.tif")).unwrap() else {
        panic!("8-bit expected");
    };
    assert_eq!(
        (s.pages(), s.height(), s.width(), s.samples()),
        (1, 4, 5, 3)
    );
    let expected: Vec<u8> = (0..60).map(|i| (i % 3 * 20 + i / 3) as u8).collect();
    assert_eq!(s.as_slice(), &expected[..]);
    let c = unet_data::read_channels(bad("planar-3-samples.tif")).unwrap();
    assert_eq!(c.channels(), 3);
    assert_eq!(
        c.planes(),
        &AnyStack::U8(Stack::new(3, 4, 5, (0..60).collect()).unwrap())
    );
}

#[test]
fn float_labels_are_refused() {
    let e = read_labels(bad("labels-float.tif")).unwrap_err();
    assert!(matches!(e, Error::WrongPixelType { .. }), "{e:?}");
}

#[test]
fn image_label_count_mismatch() {
    let (ip, lp) = (bad("images-3-pages.tif"), bad("labels-2-pages.tif"));
    let images = read_u8_stack(&ip).unwrap();
    let labels = read_labels(&lp).unwrap();
    let e = check_pair(&ip, &images, &lp, &labels).unwrap_err();
    assert!(
        e.to_string().ends_with("3 image pages but 2 label pages"),
        "{e}"
    );
}

#[test]
fn missing_file_names_the_path() {
    let e = read_stack(bad("no-such-file.tif")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-file.tif"), "{e}");
}

#[test]
fn isbi_load_reports_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        bad("images-3-pages.tif"),
        dir.path().join("train-volume.tif"),
    )
    .unwrap();
    std::fs::copy(
        bad("labels-value-37.tif"),
        dir.path().join("train-labels.tif"),
    )
    .unwrap();
    let e = unet_data::LabelledSections::load(dir.path()).unwrap_err();
    assert!(
        e.to_string().contains("train-labels.tif page 1: value 37"),
        "{e}"
    );
}
