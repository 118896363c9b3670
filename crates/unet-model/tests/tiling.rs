//! Overlap-tile prediction against one forward pass over the whole (mirror-padded) image.
//!
//! The reference here is written independently of `tiling.rs`: the image is mirror-padded by
//! walking back and forth over it, run through the net once and cropped.

use candle_core::{Device, Tensor};
use unet_model::tiling::{predict_whole_logits, tile_layout, window_input};
use unet_model::{
    output_size, overlap_tile_predict, overlap_tile_predict_probs, overlap_tile_predict_window,
    Blend, Error, Padding, TileOptions, UNet, UNetConfig, Window,
};

fn net(cfg: &UNetConfig, seed: u64) -> UNet {
    UNet::seeded(cfg, seed, &Device::Cpu).unwrap()
}

/// Depth 3, base width 4, valid padding, batch norm (running statistics in eval).
fn valid_cfg() -> UNetConfig {
    UNetConfig {
        depth: 3,
        base_width: 4,
        padding: Padding::Valid,
        ..UNetConfig::small()
    }
}

/// A smooth image with some texture, roughly standardised.
fn image(channels: usize, height: usize, width: usize) -> Vec<f32> {
    (0..channels * height * width)
        .map(|i| {
            let (c, y, x) = (i / (height * width), (i / width) % height, i % width);
            ((y as f32 * 0.37 + c as f32).sin() + (x as f32 * 0.23).cos() * (y as f32 * 0.11).sin())
                * 0.8
        })
        .collect()
}

/// Coordinate `i` mirrored into `0..n` by walking and bouncing off the edges (no edge repeat).
fn walk(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let (mut pos, dir0) = (0isize, if i >= 0 { 1 } else { -1 });
    let mut dir = dir0;
    for _ in 0..i.unsigned_abs() {
        if pos + dir < 0 || pos + dir >= n as isize {
            dir = -dir;
        }
        pos += dir;
    }
    pos as usize
}

/// The smallest valid output size covering `n`.
fn covering_output(cfg: &UNetConfig, n: usize) -> (usize, usize) {
    (1..)
        .filter_map(|input| output_size(cfg, input).ok().map(|o| (input, o)))
        .find(|&(_, o)| o >= n)
        .unwrap()
}

/// All class probabilities from one pass over the image mirrored out to the smallest input that
/// covers it, context centred (valid padding), cropped to `height` x `width`.
fn whole_image_probs(model: &UNet, img: &[f32], height: usize, width: usize) -> Vec<f32> {
    let cfg = model.config();
    let (in_h, out_h) = covering_output(cfg, height);
    let (in_w, out_w) = covering_output(cfg, width);
    let (ctx_h, ctx_w) = ((in_h - out_h) as isize / 2, (in_w - out_w) as isize / 2);
    let plane = height * width;
    let mut padded = Vec::new();
    for c in 0..cfg.in_channels {
        for y in 0..in_h as isize {
            for x in 0..in_w as isize {
                let (sy, sx) = (walk(y - ctx_h, height), walk(x - ctx_w, width));
                padded.push(img[c * plane + sy * width + sx]);
            }
        }
    }
    let x = Tensor::from_vec(padded, (1, cfg.in_channels, in_h, in_w), &Device::Cpu).unwrap();
    let probs = candle_nn::ops::softmax(&model.forward(&x).unwrap(), 1).unwrap();
    let probs = probs
        .narrow(2, 0, height)
        .unwrap()
        .narrow(3, 0, width)
        .unwrap();
    probs.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn opts(output_tile: usize, batch_size: usize) -> TileOptions {
    TileOptions {
        output_tile,
        batch_size,
        ..TileOptions::default()
    }
}

#[test]
fn valid_tiles_equal_one_pass_with_no_seam() {
    let model = net(&valid_cfg(), 3);
    // 36 and 44 are valid output sizes: the whole image fits one pass with 20 pixels of context.
    let (h, w) = (36, 44);
    let img = image(1, h, w);
    let whole = whole_image_probs(&model, &img, h, w);
    let cell: Vec<f32> = whole[h * w..].to_vec();
    let layout = tile_layout(model.config(), h, w, &opts(8, 3)).unwrap();
    assert_eq!(layout.rows.starts, vec![0, 8, 16, 24, 32]);
    assert_eq!(layout.len(), 5 * 6);
    let tiled = overlap_tile_predict(&model, &img, h, w, &opts(8, 3)).unwrap();
    // The maximum over every pixel, tile borders included: no seam anywhere.
    let diff = max_abs_diff(&tiled, &cell);
    assert!(diff < 1e-5, "tiled vs one pass: {diff}");
    // And the probabilities really vary, so the comparison means something.
    let spread =
        cell.iter().fold(0f32, |m, v| m.max(*v)) - cell.iter().fold(1f32, |m, v| m.min(*v));
    assert!(spread > 0.05, "{spread}");
    // One big tile gives the same.
    let single = overlap_tile_predict(&model, &img, h, w, &opts(1000, 1)).unwrap();
    assert!(max_abs_diff(&single, &cell) < 1e-5);
}

#[test]
fn whole_sections_in_one_pass_equal_the_mirrored_reference() {
    let model = net(&valid_cfg(), 5);
    // Neither size is a valid output: both need mirrored context beyond the image.
    let (h, w) = (37, 30);
    let (a, b) = (image(1, h, w), image(2, h, w)[h * w..].to_vec());
    let both =
        Tensor::from_vec([a.clone(), b.clone()].concat(), (2, 1, h, w), &Device::Cpu).unwrap();
    let logits = predict_whole_logits(&model, &both).unwrap();
    assert_eq!(logits.dims(), &[2, 2, h, w]);
    let probs = candle_nn::ops::softmax(&logits, 1).unwrap();
    for (k, img) in [a, b].iter().enumerate() {
        let got = probs
            .get(k)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = whole_image_probs(&model, img, h, w);
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "section {k}: {diff}");
    }
}

#[test]
fn odd_sizes_come_out_at_the_input_size() {
    let model = net(&valid_cfg(), 11);
    let (h, w) = (37, 70);
    let img = image(1, h, w);
    let probs = overlap_tile_predict_probs(&model, &img, h, w, &opts(12, 4)).unwrap();
    assert_eq!(probs.len(), 2 * h * w);
    // The last tiles reach beyond the image into its mirror image; the result is still the
    // single pass over a mirrored image of the covering size.
    let whole = whole_image_probs(&model, &img, h, w);
    let diff = max_abs_diff(&probs, &whole);
    assert!(diff < 1e-5, "{diff}");
    for (p0, p1) in probs[..h * w].iter().zip(&probs[h * w..]) {
        assert!((p0 + p1 - 1.0).abs() < 1e-5);
    }
    // Same padding, blended tiles: the right size and valid probabilities.
    let same = net(
        &UNetConfig {
            padding: Padding::Same,
            ..valid_cfg()
        },
        11,
    );
    for blend in [Blend::None, Blend::Linear, Blend::Gaussian] {
        let o = TileOptions {
            output_tile: 16,
            overlap: 8,
            batch_size: 5,
            blend,
            tta: false,
        };
        let p = overlap_tile_predict(&same, &img, h, w, &o).unwrap();
        assert_eq!(p.len(), h * w);
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)), "{blend:?}");
    }
}

#[test]
fn a_single_pixel_works() {
    let model = net(&valid_cfg(), 5);
    let p = overlap_tile_predict(&model, &[0.7], 1, 1, &TileOptions::default()).unwrap();
    let whole = whole_image_probs(&model, &[0.7], 1, 1);
    assert_eq!(p.len(), 1);
    assert!((p[0] - whole[1]).abs() < 1e-5, "{} vs {}", p[0], whole[1]);
    let same = net(&UNetConfig::small(), 5);
    let p = overlap_tile_predict(&same, &[0.7], 1, 1, &TileOptions::default()).unwrap();
    assert_eq!(p.len(), 1);
    assert!(p[0].is_finite() && (0.0..=1.0).contains(&p[0]));
    // Thin strips too.
    let p = overlap_tile_predict(&model, &image(1, 1, 50), 1, 50, &opts(8, 2)).unwrap();
    assert!(
        max_abs_diff(
            &p,
            &whole_image_probs(&model, &image(1, 1, 50), 1, 50)[50..]
        ) < 1e-5
    );
}

#[test]
fn multi_channel_input() {
    let cfg = UNetConfig {
        in_channels: 3,
        n_classes: 3,
        ..valid_cfg()
    };
    let model = net(&cfg, 8);
    let (h, w) = (21, 30);
    let img = image(3, h, w);
    let probs = overlap_tile_predict_probs(&model, &img, h, w, &opts(8, 2)).unwrap();
    assert_eq!(probs.len(), 3 * h * w);
    assert!(max_abs_diff(&probs, &whole_image_probs(&model, &img, h, w)) < 1e-5);
    let cell = overlap_tile_predict(&model, &img, h, w, &opts(8, 2)).unwrap();
    assert_eq!(cell, probs[h * w..2 * h * w].to_vec());
}

/// Sets every conv kernel to the centre tap only: a depth-1 net becomes a per-pixel function,
/// so zero padding at tile edges changes nothing and any blend must reproduce one pass.
#[test]
fn blends_are_normalised() {
    let cfg = UNetConfig {
        depth: 1,
        base_width: 4,
        padding: Padding::Same,
        batch_norm: false,
        ..UNetConfig::small()
    };
    let model = net(&cfg, 21);
    for (name, var) in model.parameters() {
        let t = var.as_tensor();
        if name.ends_with("weight") && t.dims()[2] == 3 {
            let mask: Vec<f32> = (0..9).map(|k| if k == 4 { 1.0 } else { 0.0 }).collect();
            let mask = Tensor::from_vec(mask, (1, 1, 3, 3), &Device::Cpu).unwrap();
            var.set(&t.broadcast_mul(&mask).unwrap()).unwrap();
        }
    }
    let (h, w) = (29, 41);
    let img = image(1, h, w);
    let x = Tensor::from_vec(img.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
    let want = candle_nn::ops::softmax(&model.forward(&x).unwrap(), 1)
        .unwrap()
        .narrow(1, 1, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for blend in [Blend::None, Blend::Linear, Blend::Gaussian] {
        let o = TileOptions {
            output_tile: 10,
            overlap: 4,
            batch_size: 7,
            blend,
            tta: false,
        };
        assert!(tile_layout(&cfg, h, w, &o).unwrap().len() > 9);
        let got = overlap_tile_predict(&model, &img, h, w, &o).unwrap();
        let diff = max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "{blend:?}: {diff}");
    }
}

/// With same padding and a hard cut in the middle of an overlap at least twice the receptive
/// radius (2 pixels for depth 1), every pixel comes from a tile that saw all its context: tiles
/// equal one pass away from the image border.
#[test]
fn same_padding_hard_cut_is_exact_inside() {
    let cfg = UNetConfig {
        depth: 1,
        base_width: 4,
        padding: Padding::Same,
        ..UNetConfig::small()
    };
    let model = net(&cfg, 4);
    let (h, w) = (30, 33);
    let img = image(1, h, w);
    let x = Tensor::from_vec(img.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
    let want = candle_nn::ops::softmax(&model.forward(&x).unwrap(), 1)
        .unwrap()
        .narrow(1, 1, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let o = TileOptions {
        output_tile: 12,
        overlap: 4,
        batch_size: 4,
        blend: Blend::None,
        tta: false,
    };
    let got = overlap_tile_predict(&model, &img, h, w, &o).unwrap();
    let mut worst = 0f32;
    for y in 2..h - 2 {
        for x in 2..w - 2 {
            worst = worst.max((got[y * w + x] - want[y * w + x]).abs());
        }
    }
    assert!(worst < 1e-5, "{worst}");
}

/// A net whose kernels are invariant under flips and transposition (all taps of every 3x3 and
/// 2x2 kernel equal) is equivariant under the 8 symmetries of the square, so TTA changes
/// nothing; a random net's TTA does change the prediction.
#[test]
fn tta_of_a_symmetric_net_changes_nothing() {
    let model = net(&valid_cfg(), 9);
    let (h, w) = (36, 44);
    let img = image(1, h, w);
    let plain = |m: &UNet, tta: bool| {
        let o = TileOptions { tta, ..opts(12, 4) };
        overlap_tile_predict(m, &img, h, w, &o).unwrap()
    };
    let random_diff = max_abs_diff(&plain(&model, false), &plain(&model, true));
    assert!(
        random_diff > 1e-3,
        "TTA did nothing on a random net: {random_diff}"
    );

    for (_, var) in model.parameters() {
        let t = var.as_tensor();
        if t.rank() == 4 && t.dims()[2] > 1 {
            let mean = t.mean_keepdim(3).unwrap().mean_keepdim(2).unwrap();
            var.set(&mean.broadcast_as(t.shape()).unwrap().contiguous().unwrap())
                .unwrap();
        }
    }
    let without = plain(&model, false);
    let with = plain(&model, true);
    let diff = max_abs_diff(&without, &with);
    assert!(diff < 1e-5, "{diff}");
    let spread =
        without.iter().fold(0f32, |m, v| m.max(*v)) - without.iter().fold(1f32, |m, v| m.min(*v));
    assert!(spread > 1e-3, "{spread}");
}

#[test]
fn bad_input_is_a_typed_error() {
    let model = net(&valid_cfg(), 1);
    let err = overlap_tile_predict(&model, &[0.0; 10], 3, 4, &TileOptions::default()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ImageLength {
                got: 10,
                expected: 12,
                ..
            }
        ),
        "{err}"
    );
    let err = overlap_tile_predict(&model, &[], 0, 4, &TileOptions::default()).unwrap_err();
    assert!(matches!(err, Error::EmptyImage { .. }), "{err}");
    let err =
        overlap_tile_predict(&model, &[0.0, f32::NAN], 1, 2, &TileOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("non-finite value (NaN) at index 1"),
        "{err}"
    );
    let zero = TileOptions {
        output_tile: 0,
        ..TileOptions::default()
    };
    let err = overlap_tile_predict(&model, &[0.0], 1, 1, &zero).unwrap_err();
    assert!(
        err.to_string().contains("output_tile must be at least 1"),
        "{err}"
    );
}

/// The pixels of `window` cut out of channel planes of `height` x `width`.
fn crop(img: &[f32], channels: usize, height: usize, width: usize, window: &Window) -> Vec<f32> {
    let mut out = Vec::new();
    for c in 0..channels {
        for y in window.y.clone() {
            let row = (c * height + y) * width;
            out.extend_from_slice(&img[row + window.x.start..row + window.x.end]);
        }
    }
    out
}

/// A window of an image, predicted from only the crop `window_input` names, gives the whole
/// image's numbers bit for bit: valid and same padding, every blend, windows on and off the
/// tile grid, at the border and inside, batch sizes that cut the tile list differently.
#[test]
fn windows_give_the_whole_images_numbers() {
    let same = |blend| {
        (
            UNetConfig {
                padding: Padding::Same,
                ..valid_cfg()
            },
            TileOptions {
                output_tile: 16,
                overlap: 6,
                batch_size: 3,
                blend,
                tta: false,
            },
        )
    };
    let cases = [
        (valid_cfg(), opts(12, 2)),
        (valid_cfg(), opts(40, 4)),
        same(Blend::Gaussian),
        same(Blend::Linear),
        same(Blend::None),
    ];
    let (h, w) = (45, 38);
    let img = image(1, h, w);
    for (k, (cfg, o)) in cases.iter().enumerate() {
        let model = net(cfg, 5 + k as u64);
        let whole = overlap_tile_predict(&model, &img, h, w, o).unwrap();
        for window in [
            Window { y: 0..13, x: 0..38 },
            Window {
                y: 13..26,
                x: 7..19,
            },
            Window {
                y: 39..45,
                x: 31..38,
            },
            Window { y: 20..21, x: 0..1 },
            Window::full(h, w),
        ] {
            let need = window_input(cfg, h, w, &window, o).unwrap();
            assert!(need.contains(&window), "{need:?} {window:?}");
            let pixels = crop(&img, 1, h, w, &need);
            let got =
                overlap_tile_predict_window(&model, &pixels, &need, h, w, &window, o).unwrap();
            let want = crop(&whole, 1, h, w, &window);
            assert_eq!(got, want, "case {k}, window {window:?}");
        }
        // A crop that misses pixels the window needs is an error, not a wrong answer.
        let window = Window {
            y: 13..26,
            x: 7..19,
        };
        let err = overlap_tile_predict_window(
            &model,
            &crop(&img, 1, h, w, &window),
            &window,
            h,
            w,
            &window,
            o,
        )
        .unwrap_err();
        assert!(err.to_string().contains("lacks pixel"), "{err}");
    }
}
