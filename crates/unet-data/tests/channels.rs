//! Images with channels and class-index labels (#23), from small TIFFs written here: RGB,
//! planar 16-bit, ImageJ hyperstacks, OME-TIFF, float; labels 8- and 16-bit, K inferred and
//! given, an ignore value, the binary conventions; and the errors that name file, page and value.

mod common;

use std::path::Path;

use tiff::encoder::colortype;
use unet_data::{
    check_pair, read_channels, read_class_labels, read_stack, write_channels, write_stack,
    AnyStack, ChannelStack, Error, LabelOptions, Stack,
};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn rgb_8bit_pages_are_sections_of_three_channels() {
    let dir = tempfile::tempdir().unwrap();
    // Two 2x3 RGB pages; pixel i of page p is (p*100 + i, p*100 + i + 10, p*100 + i + 20).
    let pages: Vec<Vec<u8>> = (0..2u8)
        .map(|p| {
            (0..6u8)
                .flat_map(|i| [p * 100 + i, p * 100 + i + 10, p * 100 + i + 20])
                .collect()
        })
        .collect();
    let mut bytes = std::io::Cursor::new(Vec::new());
    {
        let mut enc = tiff::encoder::TiffEncoder::new(&mut bytes).unwrap();
        for p in &pages {
            enc.write_image::<colortype::RGB8>(3, 2, p).unwrap();
        }
    }
    let path = write(dir.path(), "rgb.tif", &bytes.into_inner());
    let c = read_channels(&path).unwrap();
    assert_eq!(
        (c.sections(), c.channels(), c.height(), c.width()),
        (2, 3, 2, 3)
    );
    assert_eq!(c.pixel_type(), "8-bit");
    let AnyStack::U8(planes) = c.planes() else {
        panic!("8-bit planes expected")
    };
    // Section 1, channel 2 (blue) is plane 5.
    assert_eq!(planes.page(5), &[120, 121, 122, 123, 124, 125]);
    assert_eq!(planes.page(0), &[0, 1, 2, 3, 4, 5]);
    let stats = c.channel_stats(&[0, 1]).unwrap();
    assert_eq!(stats.len(), 3);
    assert_eq!(stats[0].mean, 52.5);
    assert_eq!(stats[2].mean, 72.5);
    assert_eq!(c.unit_scale(), 1.0 / 255.0);
    // The model takes grey images: named as a channel mismatch.
    let e = c.check_channels(&path, 1).unwrap_err();
    assert!(matches!(
        e,
        Error::ChannelMismatch {
            found: 3,
            expected: 1,
            ..
        }
    ));
    assert!(e.to_string().contains("rgb.tif: 3 channel(s)"), "{e}");
    c.check_channels(&path, 3).unwrap();
}

#[test]
fn float_rgb_pages() {
    let dir = tempfile::tempdir().unwrap();
    let page: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
    let mut bytes = std::io::Cursor::new(Vec::new());
    tiff::encoder::TiffEncoder::new(&mut bytes)
        .unwrap()
        .write_image::<colortype::RGB32Float>(2, 2, &page)
        .unwrap();
    let path = write(dir.path(), "rgbf.tif", &bytes.into_inner());
    let c = read_channels(&path).unwrap();
    assert_eq!(
        (c.sections(), c.channels(), c.pixel_type()),
        (1, 3, "32-bit float")
    );
    let expected: Vec<f32> = [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]
        .iter()
        .map(|&i| page[i])
        .collect();
    assert_eq!(c.to_unit_f32().as_slice(), &expected[..]);
}

#[test]
fn planar_16bit_three_channels() {
    let dir = tempfile::tempdir().unwrap();
    let (h, w) = (3u32, 4u32);
    let pages: Vec<Vec<u16>> = (0..2u16)
        .map(|p| (0..36u16).map(|i| p * 1000 + i * 500).collect())
        .collect();
    let path = write(
        dir.path(),
        "planar.tif",
        &common::planar_rgb16(h, w, &pages),
    );
    let c = read_channels(&path).unwrap();
    assert_eq!(
        (c.sections(), c.channels(), c.pixel_type()),
        (2, 3, "16-bit")
    );
    // Planar pages are already channel planes, section after section.
    let all: Vec<u16> = pages.concat();
    assert_eq!(
        c.planes(),
        &AnyStack::U16(Stack::new(6, 3, 4, all).unwrap())
    );
    // read_stack sees the same pixels, interleaved.
    let AnyStack::U16(s) = read_stack(&path).unwrap() else {
        panic!("16-bit expected")
    };
    assert_eq!(s.samples(), 3);
    assert_eq!(&s.page(1)[..6], &[1000, 7000, 13000, 1500, 7500, 13500]);
}

#[test]
fn imagej_hyperstack_with_two_channels() {
    let dir = tempfile::tempdir().unwrap();
    // 3 slices of 2 channels, pages channel-fastest: page k holds the value k.
    let pages: Vec<Vec<u16>> = (0..6u16).map(|k| vec![k; 4 * 5]).collect();
    let path = write(
        dir.path(),
        "hyper.tif",
        &common::described::<colortype::Gray16>(4, 5, &pages, &common::imagej(2, 3)),
    );
    let c = read_channels(&path).unwrap();
    assert_eq!((c.sections(), c.channels()), (3, 2));
    let AnyStack::U16(planes) = c.planes() else {
        panic!("16-bit expected")
    };
    assert_eq!(planes.page(3)[0], 3); // section 1, channel 1
    let stats = c.channel_stats(&[0, 1, 2]).unwrap();
    assert_eq!((stats[0].mean, stats[1].mean), (2.0, 3.0));

    // A description that does not fit the pages is refused, naming the file.
    let path = write(
        dir.path(),
        "odd.tif",
        &common::described::<colortype::Gray16>(4, 5, &pages[..5], "ImageJ=1.54f\nchannels=2\n"),
    );
    let e = read_channels(&path).unwrap_err().to_string();
    assert!(e.contains("odd.tif") && e.contains("channels=2"), "{e}");
}

#[test]
fn ome_tiff_channels_in_its_dimension_order() {
    let dir = tempfile::tempdir().unwrap();
    // XYZCT: Z fastest, so page = z + 3 c; page k holds the value k.
    let pages: Vec<Vec<u8>> = (0..6u8).map(|k| vec![k; 2 * 3]).collect();
    let path = write(
        dir.path(),
        "ome.tif",
        &common::described::<colortype::Gray8>(2, 3, &pages, &common::ome("XYZCT", 2, 3, 2, 3)),
    );
    let c = read_channels(&path).unwrap();
    assert_eq!((c.sections(), c.channels()), (3, 2));
    let AnyStack::U8(planes) = c.planes() else {
        panic!("8-bit expected")
    };
    let firsts: Vec<u8> = planes.iter_pages().map(|p| p[0]).collect();
    assert_eq!(firsts, vec![0, 3, 1, 4, 2, 5]);
}

#[test]
fn float_channels_round_trip_and_grey_reads_as_before() {
    let dir = tempfile::tempdir().unwrap();
    // Per-class probabilities: 2 sections of 3 classes, 4x5.
    let planes = Stack::new(6, 4, 5, (0..120).map(|v| v as f32 / 120.0).collect()).unwrap();
    let probs = ChannelStack::new(3, planes).unwrap();
    let path = dir.path().join("probs.tif");
    write_channels(&path, &probs).unwrap();
    assert_eq!(read_channels(&path).unwrap(), probs);
    assert_eq!(probs.unit_scale(), 1.0);
    // One file, no temporary left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // A grey stack is one channel, its pages the sections, the pixels as read_stack reads them.
    let grey = Stack::new(3, 2, 2, (0..12u8).collect()).unwrap();
    let gp = dir.path().join("grey.tif");
    write_stack(&gp, &grey).unwrap();
    let c = read_channels(&gp).unwrap();
    assert_eq!((c.sections(), c.channels()), (3, 1));
    assert_eq!(c.planes(), &read_stack(&gp).unwrap());
    // Written back with write_channels, still the same.
    write_channels(&gp, &c).unwrap();
    assert_eq!(read_stack(&gp).unwrap(), AnyStack::U8(grey));
    assert_eq!(read_channels(&gp).unwrap(), c);
}

#[test]
fn class_labels_8_and_16_bit() {
    let dir = tempfile::tempdir().unwrap();
    let p8 = dir.path().join("l8.tif");
    write_stack(
        &p8,
        &Stack::new(2, 2, 2, vec![0u8, 1, 2, 3, 3, 2, 1, 0]).unwrap(),
    )
    .unwrap();
    let l = read_class_labels(&p8, &LabelOptions::default()).unwrap();
    assert_eq!((l.classes(), l.binary(), l.ignore()), (4, None, None));
    assert_eq!(l.class_counts(&[0, 1]).unwrap(), vec![2, 2, 2, 2]);
    assert_eq!(l.class_fractions(&[0]).unwrap(), vec![0.25; 4]);
    let given = LabelOptions {
        classes: Some(6),
        ignore: None,
    };
    assert_eq!(read_class_labels(&p8, &given).unwrap().classes(), 6);

    // 16-bit, with an ignore value far above the classes.
    let p16 = dir.path().join("l16.tif");
    let values = vec![0u16, 1, 300, 65535, 65535, 2, 299, 0];
    write_stack(&p16, &Stack::new(2, 2, 2, values.clone()).unwrap()).unwrap();
    let opts = LabelOptions {
        classes: None,
        ignore: Some(65535),
    };
    let l = read_class_labels(&p16, &opts).unwrap();
    assert_eq!((l.classes(), l.ignore()), (301, Some(65535)));
    assert_eq!(l.labels().as_slice(), &values[..]);
    let counts = l.class_counts(&[0, 1]).unwrap();
    assert_eq!(counts.iter().sum::<u64>(), 6);
    assert_eq!((counts[0], counts[300]), (2, 1));
}

#[test]
fn binary_labels_read_as_classes_0_and_1() {
    let dir = tempfile::tempdir().unwrap();
    for (name, high) in [("b255.tif", 255u8), ("b1.tif", 1)] {
        let p = dir.path().join(name);
        write_stack(&p, &Stack::new(1, 2, 2, vec![0, high, high, 0]).unwrap()).unwrap();
        for classes in [None, Some(2)] {
            let l = read_class_labels(
                &p,
                &LabelOptions {
                    classes,
                    ignore: None,
                },
            )
            .unwrap();
            assert_eq!(l.labels().as_slice(), &[0, 1, 1, 0], "{name}");
            assert_eq!((l.classes(), l.binary()), (2, Some(u16::from(high))));
        }
        // The ISBI reader is unchanged.
        assert_eq!(
            unet_data::read_labels(&p).unwrap().as_slice(),
            &[0, 255, 255, 0]
        );
    }
}

#[test]
fn a_label_of_k_or_more_names_file_page_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("labels.tif");
    let mut values = vec![0u8; 3 * 4 * 4];
    values[2 * 16 + 4 + 3] = 7; // page 2, row 1, column 3
    write_stack(&p, &Stack::new(3, 4, 4, values).unwrap()).unwrap();
    let opts = LabelOptions {
        classes: Some(5),
        ignore: Some(9),
    };
    let e = read_class_labels(&p, &opts).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("labels.tif page 2 (counting from 0), row 1, column 3: value 7"),
        "{msg}"
    );
    assert!(
        msg.contains("0..=4 for 5 classes, or the ignore value 9"),
        "{msg}"
    );
    // Float labels are refused as before.
    let pf = dir.path().join("float.tif");
    write_stack(&pf, &Stack::new(1, 1, 1, vec![0.0f32]).unwrap()).unwrap();
    let e = read_class_labels(&pf, &LabelOptions::default()).unwrap_err();
    assert!(matches!(e, Error::WrongPixelType { .. }), "{e:?}");
}

#[test]
fn images_and_labels_of_different_sizes_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let images = ChannelStack::new(2, Stack::new(4, 4, 5, vec![0u8; 80]).unwrap()).unwrap();
    let ip = dir.path().join("img.tif");
    write_channels(&ip, &images).unwrap();
    let lp = dir.path().join("lab.tif");
    write_stack(&lp, &Stack::new(2, 4, 6, vec![0u8; 48]).unwrap()).unwrap();
    let images = read_channels(&ip).unwrap();
    let labels = read_class_labels(&lp, &LabelOptions::default()).unwrap();
    let e = check_pair(&ip, &images, &lp, &labels).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("img.tif")
            && msg.contains("lab.tif")
            && msg.ends_with("images are 4x5 but labels are 4x6"),
        "{msg}"
    );
    // As many pages as the images have planes, but not sections.
    write_stack(&lp, &Stack::new(4, 4, 5, vec![0u8; 80]).unwrap()).unwrap();
    let labels = read_class_labels(&lp, &LabelOptions::default()).unwrap();
    let e = check_pair(&ip, &images, &lp, &labels).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("2 image sections but 4 label pages"),
        "{e}"
    );
    write_stack(&lp, &Stack::new(2, 4, 5, vec![0u8; 40]).unwrap()).unwrap();
    let labels = read_class_labels(&lp, &LabelOptions::default()).unwrap();
    check_pair(&ip, &images, &lp, &labels).unwrap();
}
