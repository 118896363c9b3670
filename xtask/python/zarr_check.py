"""`unet predict` on OME-Zarr, checked with zarr-python: a volume zarr-python writes (OME-Zarr
0.4 on Zarr v2, its default codecs, chunks that do not divide it) goes in; the default output
(0.4 on v2) and the `--zarr-version 3` output (0.5, sharded) are read back with their axes and
voxel size, shape and type, and hold the same voxels; a `--dtype f16` output reads as float16.

usage: python zarr_check.py UNET_BINARY WORK_DIR
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import zarr

unet, work = sys.argv[1], pathlib.Path(sys.argv[2])
work.mkdir(parents=True, exist_ok=True)
shape = (3, 70, 90)
z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
voxels = (127 + 60 * np.sin(x * 0.2 + z) * np.cos(y * 0.15) + (x * 31 + y * 17) % 40 - 20)
axes = [
    {"name": "z", "type": "space", "unit": "nanometer"},
    {"name": "y", "type": "space", "unit": "nanometer"},
    {"name": "x", "type": "space", "unit": "nanometer"},
]
scale = [40.0, 4.0, 4.0]
group = zarr.open_group(work / "vol.zarr", mode="w", zarr_format=2)
array = group.create_array("0", shape=shape, chunks=(2, 32, 32), dtype="uint8")
array[:] = voxels.astype(np.uint8)
group.attrs["multiscales"] = [{
    "version": "0.4",
    "axes": axes,
    "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
}]

outputs = {"p2.zarr": [], "p3.zarr": ["--zarr-version", "3"]}
for out, extra in outputs.items():
    cmd = [unet, "predict", "--input", str(work / "vol.zarr"), "--out", str(work / out),
           "--block", "1,64,64", *extra]
    summary = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    assert summary["blocks_done_in_store"] == summary["blocks_total"] == 8, summary

read = {}
for out, version in [("p2.zarr", "0.4"), ("p3.zarr", "0.5")]:
    group = zarr.open_group(work / out, mode="r")
    attrs = group.attrs.asdict()
    ms = (attrs["ome"] if version == "0.5" else attrs)["multiscales"][0]
    assert (ms.get("version") or attrs["ome"]["version"]) == version, attrs
    assert ms["axes"] == axes, ms["axes"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == scale, ms
    data = group[ms["datasets"][0]["path"]][:]
    assert data.shape == shape and data.dtype == np.uint8, (data.shape, data.dtype)
    read[out] = data
assert group["0"].shards == (2, 64, 64), group["0"].shards
assert np.array_equal(read["p2.zarr"], read["p3.zarr"])
assert 0 < read["p2.zarr"].mean() < 255

# Half precision on Zarr v3: zarr-python reads float16, and it rounds to the uint8 output.
cmd = [unet, "predict", "--input", str(work / "vol.zarr"), "--out", str(work / "p3f16.zarr"),
       "--block", "1,64,64", "--zarr-version", "3", "--dtype", "f16"]
subprocess.run(cmd, check=True, capture_output=True)
half = zarr.open_group(work / "p3f16.zarr", mode="r")["0"][:]
assert half.dtype == np.float16 and half.shape == shape, (half.dtype, half.shape)
assert np.abs(np.rint(half.astype(np.float32) * 255) - read["p2.zarr"]).max() <= 1
print(f"zarr-python {zarr.__version__} reads unet's OME-Zarr 0.4 and 0.5 outputs, uint8 and float16")
