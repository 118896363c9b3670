"""`unet predict` on OME-Zarr, checked with zarr-python, ome-zarr-py and ome-zarr-models: a
volume zarr-python writes (OME-Zarr 0.4 on Zarr v2, its default codecs, chunks that do not divide
it) goes in; the default output (0.4 on v2) and the `--zarr-version 3` output (0.5, sharded) are
read back with their axes and voxel size, shape and type, and hold the same voxels; a `--dtype
f16` output reads as float16. A three-channel volume through a three-class model gives every
class's probability on a channel axis, and `--argmax` the classes; two of these (0.5 with a
channel axis, 0.4 of classes) carry `--pyramid 2`, levels 1 and 2 halved in y and x. ome-zarr-models
validates every output's metadata and ome-zarr-py reads every output, and every pyramid level, as
napari's plugin does. N5, with tensorstore (an N5 implementation independent of unet's): a volume
it writes predicts as its Zarr twin, and unet's N5 output reads as the OME-Zarr output.

usage: python zarr_check.py UNET_BINARY WORK_DIR THREE_CHANNEL_THREE_CLASS_MODEL
"""

import json
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import tensorstore as ts
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v04 import Image as Image04
from ome_zarr_models.v05 import Image as Image05

unet, work, model = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3]
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

# Channels in, class probabilities out: a (c, z, y, x) volume of three channels.
shape4 = (3, *shape)
channels = np.stack([voxels, 255 - voxels, voxels / 2 + 60]).astype(np.uint8)
group = zarr.open_group(work / "vol3.zarr", mode="w", zarr_format=2)
array = group.create_array("0", shape=shape4, chunks=(1, 2, 32, 32), dtype="uint8")
array[:] = channels
axes4 = [{"name": "c", "type": "channel"}, *axes]
group.attrs["multiscales"] = [{
    "version": "0.4",
    "axes": axes4,
    "datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, *scale]}]}],
}]
runs = {
    "k2.zarr": ["--dtype", "f32"],
    "k3.zarr": ["--zarr-version", "3", "--pyramid", "2"],
    "classes.zarr": ["--argmax", "--pyramid", "2"],
}
for out, extra in runs.items():
    cmd = [unet, "predict", "--model", model, "--input", str(work / "vol3.zarr"),
           "--out", str(work / out), "--block", "1,64,64", *extra]
    subprocess.run(cmd, check=True, capture_output=True)
probs = zarr.open_group(work / "k2.zarr", mode="r")["0"][:]
assert probs.shape == (3, *shape) and probs.dtype == np.float32, (probs.shape, probs.dtype)
assert np.allclose(probs.sum(axis=0), 1.0, atol=1e-5)
probs8 = zarr.open_group(work / "k3.zarr", mode="r")["0"][:]
assert probs8.shape == (3, *shape) and probs8.dtype == np.uint8
assert np.abs(np.rint(probs * 255) - probs8).max() == 0
classes = zarr.open_group(work / "classes.zarr", mode="r")["0"][:]
assert classes.shape == shape and classes.dtype == np.uint8
assert np.array_equal(classes, probs.argmax(axis=0))


def halve(a):
    """Each 2 x 2 group's mean over the last two axes; an odd edge averages what is there."""
    h, w = a.shape[-2:]
    padded = np.pad(a.astype(np.float64), [(0, 0)] * (a.ndim - 2) + [(0, h % 2), (0, w % 2)])
    ones = np.pad(np.ones((h, w)), [(0, h % 2), (0, w % 2)])
    group = lambda v: v.reshape(*v.shape[:-2], v.shape[-2] // 2, 2, v.shape[-1] // 2, 2).sum((-3, -1))
    return group(padded) / group(ones)


# The pyramids: levels 1 and 2 are 2 x 2 means of the level before (to within uint8 rounding,
# as numpy sums in float64), classes the top-left voxel; y and x scales double per level.
k3 = zarr.open_group(work / "k3.zarr", mode="r")
level = probs
for l, want_shape in [(1, (3, 3, 35, 45)), (2, (3, 3, 18, 23))]:
    level = halve(level)
    got = k3[str(l)][:]
    assert got.shape == want_shape and level.shape == want_shape, (l, got.shape, level.shape)
    assert np.abs(np.rint(level * 255) - got).max() <= 1, l
    ds = k3.attrs["ome"]["multiscales"][0]["datasets"][l]
    assert ds["coordinateTransformations"][0]["scale"] == [1.0, 40.0, 4.0 * 2**l, 4.0 * 2**l], ds
cl = zarr.open_group(work / "classes.zarr", mode="r")
assert np.array_equal(cl["1"][:], classes[:, ::2, ::2])
assert np.array_equal(cl["2"][:], classes[:, ::4, ::4])

# The metadata validates, and ome-zarr-py reads every output with its axes.
outputs = {"p2.zarr": (Image04, axes), "p3.zarr": (Image05, axes),
           "p3f16.zarr": (Image05, axes), "k2.zarr": (Image04, axes4),
           "k3.zarr": (Image05, axes4), "classes.zarr": (Image04, axes)}
for out, (model_class, want_axes) in outputs.items():
    image = model_class.from_zarr(zarr.open_group(work / out, mode="r"))
    ms = (image.attributes.ome if model_class is Image05 else image.attributes).multiscales[0]
    assert [a.name for a in ms.axes] == [a["name"] for a in want_axes], (out, ms.axes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nodes = list(Reader(parse_url(str(work / out)))())
    stored = zarr.open_group(work / out, mode="r")["0"].shape
    assert nodes and tuple(nodes[0].data[0].shape) == tuple(stored), out
    levels = 3 if out in ("k3.zarr", "classes.zarr") else 1
    assert len(nodes[0].data) == levels, (out, len(nodes[0].data))
    for l, data in enumerate(nodes[0].data):
        shape_l = zarr.open_group(work / out, mode="r")[str(l)].shape
        assert tuple(data.shape) == tuple(shape_l), (out, l)
    assert [a["name"] for a in nodes[0].metadata["axes"]] == [a["name"] for a in want_axes], out
# N5 in and out, against tensorstore's N5 driver (not the n5 crate unet uses). tensorstore keeps
# N5's own axis order, fastest first (x, y, z), hence the transposes.
n5 = ts.open({
    "driver": "n5",
    "kvstore": {"driver": "file", "path": str(work / "vol.n5" / "s0")},
    "metadata": {"dimensions": list(shape[::-1]), "blockSize": [32, 32, 2], "dataType": "uint8",
                 "compression": {"type": "gzip"}},
    "create": True, "delete_existing": True,
}).result()
n5[...] = voxels.astype(np.uint8).T
for source, out in [("vol.n5/s0", "from_n5.zarr"), ("vol.zarr", "p.n5")]:
    cmd = [unet, "predict", "--input", str(work / source), "--out", str(work / out),
           "--block", "1,64,64"]
    subprocess.run(cmd, check=True, capture_output=True)
from_n5 = zarr.open_group(work / "from_n5.zarr", mode="r")["0"][:]
assert np.array_equal(from_n5, read["p2.zarr"]), "an N5 input predicts otherwise than its Zarr twin"
n5_out = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": str(work / "p.n5" / "s0")}})
n5_out = n5_out.result().read().result()
assert n5_out.shape == shape[::-1] and n5_out.dtype == np.uint8, (n5_out.shape, n5_out.dtype)
assert np.array_equal(n5_out.T, read["p2.zarr"]), "the N5 output differs from the OME-Zarr one"

print(f"zarr-python {zarr.__version__} reads unet's OME-Zarr 0.4 and 0.5 outputs (uint8, float16, "
      "class probabilities on a channel axis, classes, pyramids of 3 levels); ome-zarr-models "
      "validates them and ome-zarr-py reads them; tensorstore's N5 volume predicts as its Zarr "
      "twin, and it reads unet's N5 output as the OME-Zarr one")
