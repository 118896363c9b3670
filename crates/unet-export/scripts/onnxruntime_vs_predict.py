"""onnxruntime against `unet predict` on whole ISBI sections: CPU time and the largest difference
in P(cell).

The model is exported with `unet export --format onnx`; onnxruntime gets each section normalised
as the model's BioImage Model Zoo package prescribes (per image: (x - mean) / (std + 1e-6) on the
grey values, or the fixed statistics), the whole section in one run, as `unet predict` covers an
ISBI section with one 512 x 512 tile. Both run on the same cores, one after the other, repeated.

    python crates/unet-export/scripts/onnxruntime_vs_predict.py \
        --unet target/release/unet --data "$UNET_DATA" --sections 27,28,29 --repeats 5

Needs numpy, onnxruntime and tifffile (the CI environment has the first two:
`target/ci-venv/bin/pip install tifffile`).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time

import numpy as np
import onnxruntime as ort
import tifffile


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def normalise(section, normalisation):
    """The package's preprocessing on grey values 0-255 (unet_export::package::preprocessing)."""
    x = section.astype(np.float64)
    mode = normalisation.get("mode")
    if mode == "per_image":
        return ((x - x.mean()) / (x.std() + 1e-6)).astype(np.float32)
    if mode == "dataset":
        return ((x - normalisation["mean"] * 255.0) / (normalisation["std"] * 255.0)).astype(
            np.float32
        )
    if mode == "percentile":
        lo, hi = np.percentile(x, [normalisation["low"], normalisation["high"]])
        return ((x - lo) / (hi - lo + 1e-6)).astype(np.float32)
    raise SystemExit(f"unknown normalisation {normalisation!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--unet", required=True, help="the unet binary (a release build)")
    ap.add_argument("--data", required=True, help="directory with train-volume.tif")
    ap.add_argument("--sections", default="27,28,29")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--model", help="a checkpoint (default: the built-in default model)")
    ap.add_argument("--default-sidecar", default="models/default.json",
                    help="the built-in model's sidecar, for its normalisation")
    args = ap.parse_args()

    sections = [int(s) for s in args.sections.split(",")]
    volume = tifffile.imread(os.path.join(args.data, "train-volume.tif"))
    pages = volume[sections]
    if pages.dtype != np.uint8:
        raise SystemExit(f"expected 8-bit sections, got {pages.dtype}")

    work = tempfile.mkdtemp(prefix="ort-vs-predict-")
    model_args = ["--model", args.model] if args.model else []
    onnx_path = os.path.join(work, "model.onnx")
    subprocess.run(
        [args.unet, "export", "--format", "onnx", "--out", onnx_path, *model_args], check=True
    )
    sidecar = os.path.splitext(args.model)[0] + ".json" if args.model else args.default_sidecar
    with open(sidecar) as f:
        normalisation = json.load(f)["normalisation"]

    input_path = os.path.join(work, "sections.tif")
    tifffile.imwrite(input_path, pages, photometric="minisblack")
    out_path = os.path.join(work, "unet.tif")

    # Threads: unet uses rayon's pool over all cores; onnxruntime is given the same count.
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1

    unet_times, ort_times, ort_load_times = [], [], []
    ort_probs = None
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run(
            [args.unet, "predict", "--input", input_path, "--out", out_path, "--overwrite",
             *model_args],
            check=True,
            capture_output=True,
        )
        unet_times.append(time.perf_counter() - start)

        start = time.perf_counter()
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        loaded = time.perf_counter()
        name = session.get_inputs()[0].name
        probs = []
        for page in pages:
            x = normalise(page, normalisation)[None, None]
            probs.append(session.run(None, {name: x})[0][0, 1])
        ort_times.append(time.perf_counter() - start)
        ort_load_times.append(loaded - start)
        ort_probs = np.stack(probs)

    unet_probs = tifffile.imread(out_path)
    diff = np.abs(unet_probs.astype(np.float64) - ort_probs.astype(np.float64))
    decided = ((unet_probs > 0.5) != (ort_probs > 0.5)).sum()

    def spread(ts):
        return f"median {statistics.median(ts):.2f} s (min {min(ts):.2f}, max {max(ts):.2f})"

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; onnxruntime {ort.__version__}, "
          f"{args.threads} threads; sections {args.sections}; {args.repeats} repeats")
    print(f"unet predict (whole command: start, read, load the model, predict, write): "
          f"{spread(unet_times)}")
    print(f"onnxruntime (session load + normalise + run): {spread(ort_times)}; "
          f"of it the session load {spread(ort_load_times)}")
    print(f"ratio onnxruntime / unet predict (medians): "
          f"{statistics.median(ort_times) / statistics.median(unet_times):.2f}")
    print(f"P(cell): largest |difference| {diff.max():.3g}, mean {diff.mean():.3g}; "
          f"pixels decided differently at P = 0.5: {decided} of {diff.size}")


if __name__ == "__main__":
    main()
