"""Golden weight maps for unet-weights from an independent implementation (SciPy).

w(x) = w_c(x) + w0 * exp(-(d1 + d2)^2 / (2 sigma^2)), with d1, d2 the distances to the nearest
and second-nearest connected component of label > 0, each from scipy.ndimage's exact EDT of
"not this cell". Writes under tests/fixtures/:
  manifest.txt                 one line per image: name height width
  <name>.labels.u8             the label image, row-major
  <name>.<config>.f32          its weight map per config, little-endian f32, row-major

Run from anywhere: python3 crates/unet-weights/scripts/make_fixtures.py [path/to/train-labels.tif]
(needs numpy, scipy, tifffile; the ISBI path defaults to $UNET_DATA, else data/isbi2012 in the
repo, the rule of unet_data::locate_data_dir).
"""

import os
import pathlib
import sys

import numpy as np
import tifffile
from scipy import ndimage as ndi

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "fixtures"
DEFAULT_ISBI = (
    pathlib.Path(os.environ["UNET_DATA"])
    if os.environ.get("UNET_DATA")
    else HERE.parents[2] / "data" / "isbi2012"
) / "train-labels.tif"

# name: (w0, sigma, connectivity, class weight, border term on all pixels?)
CONFIGS = {
    "default": (10.0, 5.0, 4, "balanced", False),
    "eight_mean1_all": (10.0, 5.0, 8, "mean1", True),
}


def weight_map(labels, w0, sigma, connectivity, class_weight, all_pixels):
    foreground = labels > 0
    structure = np.ones((3, 3)) if connectivity == 8 else None  # None: scipy's 4-connected cross
    cells, count = ndi.label(foreground, structure=structure)
    total = labels.size
    counts = {True: foreground.sum(), False: total - foreground.sum()}
    present = sum(1 for c in counts.values() if c > 0)
    weights = np.zeros(labels.shape, dtype=np.float64)
    for is_cell, pixels in counts.items():
        if pixels == 0:
            continue
        w = total / pixels
        if class_weight == "mean1":
            w /= present
        weights[foreground == is_cell] = w
    if count >= 2:
        distances = np.stack(
            [ndi.distance_transform_edt(cells != c) for c in range(1, count + 1)]
        )
        distances.sort(axis=0)
        d1, d2 = distances[0], distances[1]
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
        where = np.ones_like(foreground) if all_pixels else ~foreground
        weights[where] += border[where]
    return weights.astype("<f4")


def voronoi_membranes(rng, height, width, seeds):
    """Cells of a random Voronoi partition, with 1-px membranes where neighbours differ."""
    points = rng.uniform([0, 0], [height, width], size=(seeds, 2))
    ys, xs = np.mgrid[0:height, 0:width]
    owner = np.argmin((ys[..., None] - points[:, 0]) ** 2 + (xs[..., None] - points[:, 1]) ** 2, axis=-1)
    membrane = np.zeros((height, width), dtype=bool)
    membrane[:, 1:] |= owner[:, 1:] != owner[:, :-1]
    membrane[1:, :] |= owner[1:, :] != owner[:-1, :]
    return np.where(membrane, 0, 255).astype(np.uint8)


def smooth_blobs(rng, height, width, sigma, level):
    noise = ndi.gaussian_filter(rng.standard_normal((height, width)), sigma)
    return np.where(noise > level * noise.std(), 255, 0).astype(np.uint8)


def main():
    isbi = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ISBI
    rng = np.random.default_rng(2015)
    sparse = smooth_blobs(rng, 48, 64, 1.0, 1.2)
    # A diagonal pair: two cells under 4-connectivity, one under 8.
    sparse[40:42, 4:6] = [[255, 0], [0, 255]]
    images = {
        "voronoi": voronoi_membranes(rng, 48, 64, 14),
        "blobs": smooth_blobs(rng, 48, 64, 3.0, 0.3),
        "sparse": sparse,
        # A 64x64 crop of a real ISBI 2012 training label (page 0).
        "isbi_page0_crop": tifffile.imread(isbi)[0, 224:288, 224:288].astype(np.uint8),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, labels in images.items():
        height, width = labels.shape
        manifest.append(f"{name} {height} {width}")
        labels.tofile(OUT / f"{name}.labels.u8")
        for config, params in CONFIGS.items():
            weight_map(labels, *params).tofile(OUT / f"{name}.{config}.f32")
        cells4 = ndi.label(labels > 0)[1]
        cells8 = ndi.label(labels > 0, structure=np.ones((3, 3)))[1]
        print(f"{name}: {height}x{width}, {cells4} cells (4-conn), {cells8} (8-conn)")
    (OUT / "manifest.txt").write_text("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
