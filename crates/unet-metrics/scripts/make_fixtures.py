#!/usr/bin/env python3
"""Writes tests/fixtures/{skimage_prob.f32,skimage_labels.u8,skimage_scores.json}.

An independent check of the unthinned ISBI scores: scikit-image's adapted_rand_error and
variation_of_information, plus a literal NumPy port of Fiji's foreground-restricted formulas
(RandError.getForegroundRestrictedRandIndexStatsN2, VariationOfInformation.foregroundRestrictedFscore).

Mapping to Fiji: the truth is the 4-connected components of label > 0 with label 0 ignored
(ignore_labels=(0,)); the proposal is the 4-connected components of P > t, and Fiji counts every
proposal background pixel as a singleton, so each gets its own label here. skimage then differs
from Fiji's V-Rand only by leaving out the n self-pairs:
    V_rand(skimage) = 2 (sum c^2 - n) / (sum s^2 - n + sum t^2 - n).
skimage's VI tables are in bits; the Rust test converts.

Run: python3 crates/unet-metrics/scripts/make_fixtures.py  (numpy, scipy, scikit-image)
"""
import json
import os
import sys

import numpy as np
from scipy import ndimage
from skimage.metrics import adapted_rand_error, variation_of_information

HERE = os.path.dirname(os.path.abspath(__file__))
# Fiji's N^2-normalised foreground-restricted V-Rand and V-Info, from the Python port of the
# scoring that the unet_rs tests also use.
sys.path.insert(0, os.path.join(HERE, "..", "..", "unet-py", "tests"))
from fiji_port import fiji_v_scores  # noqa: E402
OUT = os.path.join(HERE, "..", "tests", "fixtures")
PAGES, HEIGHT, WIDTH = 3, 40, 48


def synthetic_section(rng):
    """Voronoi cells (255) with ~2-pixel membranes (0), and a blurred noisy P(cell)."""
    seeds = rng.uniform([0, 0], [HEIGHT, WIDTH], size=(14, 2))
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    d = np.sqrt((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2)
    d.sort(axis=-1)
    labels = np.where(d[..., 1] - d[..., 0] > 1.6, 255, 0).astype(np.uint8)
    prob = ndimage.gaussian_filter(labels / 255.0, 1.2) + rng.normal(0, 0.12, labels.shape)
    return np.clip(prob, 0, 1).astype(np.float32), labels


def fiji_thresholds(lo, hi, step):
    out, th = [], lo
    while th <= hi:
        out.append(th)
        th += step
    return out


def main():
    rng = np.random.default_rng(2012)
    probs, labels = zip(*(synthetic_section(rng) for _ in range(PAGES)))
    prob, label = np.stack(probs), np.stack(labels)
    thresholds = fiji_thresholds(0.0, 0.9, 0.1)
    cases = []
    for page in range(PAGES):
        truth, _ = ndimage.label(label[page] > 0)  # 4-connected (cross) by default
        for t in thresholds:
            mask = prob[page].astype(np.float64) > t
            comps, count = ndimage.label(mask)
            bg = comps == 0
            singles = comps.copy()
            singles[bg] = count + 1 + np.arange(np.count_nonzero(bg))
            are, _, _ = adapted_rand_error(truth, singles, ignore_labels=(0,))
            splits, merges = variation_of_information(truth, singles, ignore_labels=(0,))
            fg = truth > 0
            h_truth = float(-sum(p * np.log2(p) for p in np.bincount(truth[fg])[1:] / fg.sum() if p > 0))
            _, counts = np.unique(singles[fg], return_counts=True)
            h_prop = float(-sum(p * np.log2(p) for p in counts / fg.sum()))
            v_rand, v_info = fiji_v_scores(truth, comps)
            cases.append({
                "page": page,
                "threshold": t,
                "skimage_v_rand": 1.0 - float(are),
                "skimage_h_proposal_given_truth_bits": float(splits),
                "skimage_h_truth_given_proposal_bits": float(merges),
                "h_truth_bits": h_truth,
                "h_proposal_bits": h_prop,
                "fiji_v_rand": float(v_rand),
                "fiji_v_info": float(v_info),
            })
    os.makedirs(OUT, exist_ok=True)
    prob.astype("<f4").tofile(os.path.join(OUT, "skimage_prob.f32"))
    label.tofile(os.path.join(OUT, "skimage_labels.u8"))
    with open(os.path.join(OUT, "skimage_scores.json"), "w") as f:
        json.dump({"pages": PAGES, "height": HEIGHT, "width": WIDTH,
                   "thresholds": thresholds, "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
