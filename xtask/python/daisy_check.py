"""`unet predict --daisy-worker` under a real daisy 2.0 scheduler: docs/volumes/predict_with_daisy.py
drives two unet workers over a small OME-Zarr volume (written with zarr-python, chunks that do not
divide it) to completion; the store holds the same voxels as one job-array worker's, both workers
took blocks, and a rerun finds every block done and predicts none.

usage: python daisy_check.py UNET_BINARY WORK_DIR
"""

import json
import pathlib
import subprocess
import sys

import numpy as np
import zarr

unet, work = str(pathlib.Path(sys.argv[1]).resolve()), pathlib.Path(sys.argv[2])
root = pathlib.Path(__file__).resolve().parents[2]
driver = root / "docs" / "volumes" / "predict_with_daisy.py"
work.mkdir(parents=True, exist_ok=True)

shape = (2, 70, 90)
z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
voxels = 127 + 60 * np.sin(x * 0.2 + z) * np.cos(y * 0.15) + (x * 31 + y * 17) % 40 - 20
group = zarr.open_group(work / "vol.zarr", mode="w", zarr_format=2)
group.create_array("0", shape=shape, chunks=(1, 32, 32), dtype="uint8")[:] = voxels.astype(np.uint8)
group.attrs["multiscales"] = [{
    "version": "0.4",
    "axes": [{"name": n, "type": "space"} for n in "zyx"],
    "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}],
}]
block = "1,32,64"  # whole chunks: 2 x 3 x 2 = 12 blocks, the last ones clipped

one = subprocess.run([unet, "predict", "--input", str(work / "vol.zarr"), "--out",
                      str(work / "one.zarr"), "--block", block],
                     check=True, capture_output=True, text=True)
assert json.loads(one.stdout)["blocks_predicted"] == 12, one.stdout


def run_daisy(logs):
    subprocess.run([sys.executable, str(driver), "--unet", unet, "--input", str(work / "vol.zarr"),
                    "--out", str(work / "daisy.zarr"), "--block", block, "--workers", "2",
                    "--log-dir", str(work / logs)], check=True, cwd=work)
    summaries = []
    for out in sorted((work / logs).glob("unet-predict/worker_*.out")):
        lines = [line for line in out.read_text().splitlines() if line.startswith("{")]
        summaries += [json.loads(line) for line in lines]
    return summaries


summaries = run_daisy("logs1")
predicted = [s["blocks_predicted"] for s in summaries]
assert sum(predicted) == 12 and len(predicted) == 2 and all(p > 0 for p in predicted), summaries
assert max(s["blocks_done_in_store"] for s in summaries) == 12, summaries
a = zarr.open_array(work / "one.zarr" / "0", mode="r")[:]
b = zarr.open_array(work / "daisy.zarr" / "0", mode="r")[:]
assert a.shape == b.shape == shape and a.dtype == b.dtype == np.uint8, (a.shape, b.shape)
assert np.array_equal(a, b), "daisy's workers wrote other voxels than one worker"

again = run_daisy("logs2")
assert sum(s["blocks_predicted"] for s in again) == 0, again
assert sum(s["blocks_skipped"] for s in again) == 12, again
print(f"daisy_check: two daisy workers predicted {predicted} of 12 blocks; identical to one "
      "worker's store; a rerun skipped all 12")

# A daisy block that is not a block of unet's store (30 is not whole 32-voxel chunks): the worker
# returns it as failed with unet's reason, and daisy gives up on the task.
bad = subprocess.run([sys.executable, str(driver), "--unet", unet, "--input", str(work / "vol.zarr"),
                      "--out", str(work / "bad.zarr"), "--block", "1,30,64", "--workers", "1",
                      "--log-dir", str(work / "logs3")], cwd=work, capture_output=True, text=True)
assert bad.returncode != 0, bad
errors = "".join(p.read_text() for p in (work / "logs3").glob("unet-predict/worker_*.err"))
assert "is not a block of this store" in errors, errors[-2000:]
print("daisy_check: a block that is not the store's failed with unet's reason; daisy gave up")
