"""unet_rs next to the Python way of doing the same work, in one process, on the ISBI stacks.

    UNET_DATA=data/isbi2012 python crates/unet-py/bench/bench.py [--repeats 20]

- weight_map: unet_rs.weight_map against scipy's per-cell distance transforms (the oracle of
  tests/test_weight_map.py), three 512 x 512 sections;
- augmentation: unet_rs.Augmenter("reference") against the same recipe written with numpy and
  scipy (flips, gaussian_filter + map_coordinates dense elastic deformation of image, label and
  weights, brightness, noise), per sample, over many samples; and against the scipy elastic step
  alone on the samples where ours ran its elastic step;
- scores, 3 sections x 10 thresholds: unet_rs.scores (thinning="fiji", the official scores)
  against tests/fiji_port.py, a Python port of the Fiji scoring with its border thinning (the
  issue's target); and (thinning="none", which computes the thinned scores too) against pixel
  scores in numpy and unthinned V-Rand / V-Info from scikit-image's contingency table.

Times are medians over the repeats, with the fastest and slowest run (the spread).
"""

import argparse
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np
import tifffile
from scipy import ndimage

import unet_rs

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from fiji_port import fiji_scores  # noqa: E402
from test_scores import imperfect, numpy_pixel_scores, skimage_v_scores  # noqa: E402
from test_weight_map import scipy_weight_map  # noqa: E402

SECTIONS = [0, 14, 29]


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.median(times), min(times), max(times)


def show(name, ours, theirs):
    ratio = theirs[0] / ours[0]
    print(
        f"{name}: unet_rs {ours[0] * 1e3:.2f} ms [{ours[1] * 1e3:.2f}, {ours[2] * 1e3:.2f}], "
        f"python {theirs[0] * 1e3:.1f} ms [{theirs[1] * 1e3:.1f}, {theirs[2] * 1e3:.1f}], "
        f"ratio {ratio:.0f}x"
    )
    return ratio


def scipy_elastic(image, label, weight, rng, alpha, sigma):
    """The reference's dense elastic deformation (scipy), of image, label and weights."""
    shape = image.shape
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, shape), sigma, mode="constant") * alpha
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, shape), sigma, mode="constant") * alpha
    y, x = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    coords = np.array([y + dy, x + dx])
    return (
        ndimage.map_coordinates(image, coords, order=1, mode="mirror"),
        ndimage.map_coordinates(label, coords, order=0, mode="mirror"),
        ndimage.map_coordinates(weight, coords, order=1, mode="mirror"),
    )


def scipy_reference(image, label, weight, rng):
    """The reference preset's recipe in numpy / scipy (image in [0, 1])."""
    if rng.random() < 0.5:
        image, label, weight = image[:, ::-1], label[:, ::-1], weight[:, ::-1]
    if rng.random() < 0.5:
        image, label, weight = image[::-1], label[::-1], weight[::-1]
    if rng.random() < 0.5:
        image, label, weight = scipy_elastic(
            image, label, weight, rng, rng.uniform(100, 300), rng.uniform(10, 15)
        )
    image = np.clip(image * rng.uniform(0.6, 1.4), 0, 1)
    if rng.random() < 0.5:
        image = image + rng.normal(0, 0.173, image.shape)
    return np.ascontiguousarray(image), np.ascontiguousarray(label), np.ascontiguousarray(weight)


def only_flipped(out_label, label):
    """Whether `out_label` is `label` up to flips (our elastic step did not run)."""
    return any(
        np.array_equal(out_label, v)
        for v in (label, label[:, ::-1], label[::-1], label[::-1, ::-1])
    )


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("UNET_DATA", "data/isbi2012"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    d = pathlib.Path(args.data)
    images = tifffile.imread(d / "train-volume.tif")
    labels = tifffile.imread(d / "train-labels.tif")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; python {platform.python_version()}, "
          f"numpy {np.__version__}; unet_rs {unet_rs.__version__}")

    print("\n## weight_map (512 x 512 section, w0 10, sigma 5, class balance)")
    ratios = []
    for s in SECTIONS:
        lab = labels[s]
        np.testing.assert_allclose(unet_rs.weight_map(lab), scipy_weight_map(lab), atol=1e-4)
        ours = timed(lambda: unet_rs.weight_map(lab), args.repeats)
        theirs = timed(lambda: scipy_weight_map(lab), max(2, args.repeats // 10))
        ratios.append(show(f"section {s}", ours, theirs))
    stack = labels[SECTIONS]
    ours = timed(lambda: unet_rs.weight_map(stack), args.repeats)
    print(f"stack of 3 sections: unet_rs {ours[0] * 1e3:.2f} ms [{ours[1] * 1e3:.2f}, {ours[2] * 1e3:.2f}]")
    print(f"weight_map ratio: {min(ratios):.0f}x to {max(ratios):.0f}x (target >= 100x)")

    print(f"\n## augmentation (512 x 512 image + label + weights, {args.samples} samples)")
    image01 = images[0] / 255.0
    lab = labels[0]
    weight = unet_rs.weight_map(lab)
    for name, aug in [
        ("reference (recursive field smoothing)", unet_rs.Augmenter("reference", seed=1)),
        ("reference, elastic_smoothing='exact'", unet_rs.Augmenter("reference", seed=1, elastic_smoothing="exact")),
    ]:
        per_sample, elastic_times = [], []
        for i in range(args.samples):
            start = time.perf_counter()
            _, out_label, _ = aug.sample(i, image01, lab, weight)
            t = time.perf_counter() - start
            per_sample.append(t)
            if not only_flipped(out_label, lab):
                elastic_times.append(t)
        rng = np.random.default_rng(1)
        scipy_times = []
        for _ in range(max(10, args.samples // 4)):
            start = time.perf_counter()
            scipy_reference(image01, lab, weight, rng)
            scipy_times.append(time.perf_counter() - start)
        elastic_scipy = timed(
            lambda: scipy_elastic(image01, lab, weight, rng, rng.uniform(100, 300), rng.uniform(10, 15)),
            max(5, args.repeats // 2),
        )
        stat = lambda ts: (np.mean(ts), min(ts), max(ts))  # noqa: E731
        print(f"{name}:")
        r1 = show("  whole recipe, mean per sample", stat(per_sample), stat(scipy_times))
        r2 = show(
            f"  samples with the elastic step ({len(elastic_times)}) vs scipy's elastic step alone (median)",
            timed_from(elastic_times),
            elastic_scipy,
        )
        print(f"  augmentation ratio: {r1:.0f}x whole recipe, {r2:.0f}x elastic samples (target >= 10x)")

    print("\n## scores (3 sections, thresholds 0.0 ... 0.9)")
    lab3 = labels[SECTIONS]
    prob = imperfect(lab3)
    thresholds = [round(0.1 * i, 1) for i in range(10)]

    def python_scores():
        numpy_pixel_scores(prob, lab3)
        for t in thresholds:
            [skimage_v_scores(p, l, t) for p, l in zip(prob, lab3)]

    ours = timed(lambda: unet_rs.scores(prob, lab3, thresholds=thresholds, thinning="none"), max(3, args.repeats // 4))
    theirs = timed(python_scores, 2)
    r = show("pixel + unthinned V-Rand / V-Info (ours also thins)", ours, theirs)
    print(f"ratio against numpy + scikit-image, no thinning: {r:.0f}x")

    port = fiji_scores(prob, lab3, thresholds)
    r_fiji = unet_rs.scores(prob, lab3, thresholds=thresholds)
    np.testing.assert_allclose(r_fiji["v_rand_per_threshold"], port["v_rand"], atol=1e-12)
    np.testing.assert_allclose(r_fiji["v_info_per_threshold"], port["v_info"], atol=1e-12)
    ours = timed(lambda: unet_rs.scores(prob, lab3, thresholds=thresholds), max(3, args.repeats // 4))
    theirs = timed(lambda: fiji_scores(prob, lab3, thresholds), 3)
    r = show("the official scores: pixel F + thinned V-Rand / V-Info, against the Fiji port", ours, theirs)
    print(f"scores ratio: {r:.0f}x (target >= 30x)")


def timed_from(times):
    return np.median(times), min(times), max(times)


if __name__ == "__main__":
    main()
