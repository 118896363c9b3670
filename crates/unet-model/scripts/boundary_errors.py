#!/usr/bin/env python3
"""Where a prediction's pixel errors lie: their share by distance to the label boundary, and
the pixel accuracy when the prediction is moved by sub-pixel shifts (a systematic offset
between prediction and labels would show as a better score off zero).

    unet predict --input VAL.tif --out P.tif          # P(cell), one page per section
    python3 crates/unet-model/scripts/boundary_errors.py P.tif data/isbi2012/train-labels.tif 27 28 29

Needs numpy, scipy and tifffile. An analysis aid for docs/RESULTS.md, not a test.
"""
import sys

import numpy as np
import tifffile
from scipy import ndimage as ndi


def main():
    probs = tifffile.imread(sys.argv[1]).astype(np.float32)
    pages = [int(s) for s in sys.argv[3:]]
    labels = tifffile.imread(sys.argv[2])[pages] > 0
    if probs.ndim == 2:
        probs = probs[None]
    pred = probs > 0.5
    errors = pred != labels
    print(f"pixel accuracy {1 - errors.mean():.4f}, membrane share {1 - labels.mean():.4f} "
          f"(labels) {1 - pred.mean():.4f} (prediction)")
    for k, (lab, err) in enumerate(zip(labels, errors)):
        # Distance of every pixel to the nearest pixel of the other class.
        dist = np.where(lab, ndi.distance_transform_edt(lab), ndi.distance_transform_edt(~lab))
        shares = ", ".join(f"<= {t} px {(err & (dist <= t)).sum() / err.sum():.3f}"
                           for t in (1, 2, 3, 5))
        print(f"section {pages[k]}: errors within {shares}; "
              f"accuracy ignoring errors <= 1 px {1 - (err & (dist > 1)).mean():.4f}, "
              f"<= 2 px {1 - (err & (dist > 2)).mean():.4f}")
    inner = (slice(None), slice(8, -8), slice(8, -8))
    print("accuracy after shifting the prediction by (dy, dx) pixels (rows dy, columns dx):")
    steps = np.arange(-1.0, 1.01, 0.25)
    print("       " + " ".join(f"{dx:+6.2f}" for dx in steps))
    for dy in steps:
        row = []
        for dx in steps:
            moved = np.stack([ndi.shift(p, (dy, dx), order=1, mode="mirror") for p in probs])
            row.append(((moved > 0.5)[inner] == labels[inner]).mean())
        print(f"{dy:+6.2f} " + " ".join(f"{v:6.4f}" for v in row))


if __name__ == "__main__":
    main()
