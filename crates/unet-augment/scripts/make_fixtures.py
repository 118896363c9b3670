"""Golden fixtures for unet-augment from scipy (an independent implementation).

Writes tests/fixtures/scipy_remap_gaussian.json:
- a small image and a fixed displacement field (stored as source coordinates, float32 values),
  resampled by scipy.ndimage.map_coordinates with order=1 (bilinear) and order=0 (nearest),
  mode="mirror" (reflect about the edge pixels, no edge duplication: our BorderMode::Mirror);
- uniform(-1, 1) noise smoothed by scipy.ndimage.gaussian_filter(mode="constant", cval=0,
  truncate=4.0) for a few sigmas (the dense elastic field's smoothing).

Run: python3 crates/unet-augment/scripts/make_fixtures.py   (numpy, scipy)
"""

import json
import pathlib

import numpy as np
import scipy
from scipy import ndimage

rng = np.random.default_rng(20240601)
out = {"scipy_version": scipy.__version__}

# Resampling: 23 x 19 image, displacements up to 6 px so some coordinates leave the image.
h, w = 19, 23
image = rng.random((h, w)).astype(np.float32)
yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
dx = rng.uniform(-6, 6, (h, w)).astype(np.float32)
dy = rng.uniform(-6, 6, (h, w)).astype(np.float32)
xs = (xx + dx).astype(np.float32)
ys = (yy + dy).astype(np.float32)
coords = np.stack([ys.astype(np.float64), xs.astype(np.float64)])
bilinear = ndimage.map_coordinates(image.astype(np.float64), coords, order=1, mode="mirror")
nearest = ndimage.map_coordinates(image.astype(np.float64), coords, order=0, mode="mirror")
out["remap"] = {
    "width": w,
    "height": h,
    "image": image.ravel().tolist(),
    "dx": dx.ravel().tolist(),
    "dy": dy.ravel().tolist(),
    "xs": xs.ravel().tolist(),
    "ys": ys.ravel().tolist(),
    "bilinear_mirror": bilinear.ravel().tolist(),
    "nearest_mirror": nearest.ravel().tolist(),
}

# Gaussian smoothing of uniform(-1, 1) noise, zero outside, truncate 4.
gh, gw = 28, 32
noise = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
out["gaussian"] = {
    "width": gw,
    "height": gh,
    "noise": noise.ravel().tolist(),
    "smoothed": {
        str(sigma): ndimage.gaussian_filter(
            noise.astype(np.float64), sigma, mode="constant", cval=0.0, truncate=4.0
        )
        .ravel()
        .tolist()
        for sigma in (1.5, 4.0, 10.0)
    },
}

path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "scipy_remap_gaussian.json"
path.write_text(json.dumps(out, separators=(",", ":")))
print(f"wrote {path} ({path.stat().st_size} bytes)")
