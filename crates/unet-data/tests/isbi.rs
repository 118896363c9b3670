//! The real ISBI 2012 stacks, found by the project's one rule (`unet_data::locate_data_dir`:
//! `UNET_DATA`, else `data/isbi2012/`; `cargo xtask test` fetches them when missing).

use std::path::PathBuf;

use unet_data::{locate_data_dir, pixel_sha256, DataSource, LabelledSections, Split};

fn isbi_dir() -> PathBuf {
    locate_data_dir(None).unwrap_or_else(|e| panic!("the ISBI data is needed for this test: {e}"))
}

#[test]
fn loads_and_summarises_isbi() {
    let data = LabelledSections::load(isbi_dir()).unwrap();
    assert_eq!(data.train_images.sections(), 30);
    assert_eq!(
        (data.train_images.height(), data.train_images.width()),
        (512, 512)
    );
    assert!(data
        .train_labels
        .as_slice()
        .iter()
        .all(|&v| v == 0 || v == 255));
    assert_eq!(data.test_images.as_ref().map(|t| t.pages()), Some(30));

    let summary = data.summary(&Split::reference(30).unwrap()).unwrap();
    assert_eq!(summary.splits.len(), 2);
    let train = &summary.splits[0];
    assert_eq!(train.sections, (0..27).collect::<Vec<_>>());
    // About 78% of ISBI label pixels are cell interior.
    assert!(
        (0.74..0.82).contains(&train.cell_fraction),
        "{}",
        train.cell_fraction
    );
    assert!(
        (100.0..160.0).contains(&train.channels[0].mean),
        "{:?}",
        train.channels[0]
    );
    let text = summary.to_string();
    assert!(text.contains("30 sections of 512x512"), "{text}");
    assert!(text.contains("27-29"), "{text}");
}

#[test]
fn the_pair_loads_under_its_own_names_as_from_the_directory() {
    let dir = isbi_dir();
    let (images, labels) = (dir.join("train-volume.tif"), dir.join("train-labels.tif"));
    let pair = LabelledSections::load_files(&images, &labels).unwrap();
    let from_dir = LabelledSections::load(&dir).unwrap();
    assert_eq!(pair.train_images, from_dir.train_images);
    assert_eq!(pair.train_labels, from_dir.train_labels);
    assert!(pair.test_images.is_none());
    assert_eq!(from_dir.source, DataSource::Directory(dir.clone()));
    let summary = pair.summary(&Split::reference(30).unwrap()).unwrap();
    let text = summary.to_string();
    assert!(text.starts_with("sections "), "{text}");
    assert!(text.contains("train-labels.tif"), "{text}");

    // Images given as labels: refused, naming the file.
    let err = LabelledSections::load_files(&images, &images)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train-volume.tif") && err.contains("not a label"),
        "{err}"
    );
}

#[test]
fn isbi_pixel_checksums_match_the_download_table() {
    #[cfg(feature = "download")]
    {
        let dir = isbi_dir();
        for stack in unet_data::download::ISBI_STACKS {
            let s = unet_data::read_u8_stack(dir.join(stack.file)).unwrap();
            assert_eq!(pixel_sha256(&s), stack.pixel_sha256, "{}", stack.file);
        }
    }
    let _ = pixel_sha256;
}

#[test]
fn data_dir_flag_is_taken_as_given() {
    let dir = isbi_dir();
    assert_eq!(locate_data_dir(Some(&dir)).unwrap(), dir);
    let empty = tempfile::tempdir().unwrap();
    let e = locate_data_dir(Some(empty.path())).unwrap_err().to_string();
    assert!(
        e.contains("--data") && e.contains("cargo xtask fetch-data"),
        "{e}"
    );
}
