"""Predict an OME-Zarr volume with unet, the blocks handed out by daisy 2.0.

daisy (funkelab's blockwise task scheduler, `pip install daisy zarr`) cuts the volume into
blocks and hands them to `unet predict --daisy-worker` processes, which find the scheduler
through DAISY_CONTEXT. Each block is one block of unet's output store: the Task's write_roi and
read_roi are the `--block` shape in voxels (z, y, x; whole chunks of the output, which unet's
error names otherwise) and its total_roi the volume. A unet block reads the context it needs
from the volume itself, so blocks have no read/write conflicts. unet's store keeps its own
done-markers: rerun the same command after an interruption and finished blocks go back to
daisy at once.

usage:
  python predict_with_daisy.py --input VOL.zarr --out OUT.zarr --block 1,1024,1024 \\
      --workers 4 [--unet unet] [--log-dir daisy_logs] [-- more unet predict flags, e.g. --model m]

To run the workers on a cluster, replace `subprocess.run` in `worker` with the launcher
(`srun`, `bsub`, a container) that runs the same command with the same DAISY_CONTEXT.
"""

import argparse
import os
import subprocess
import sys

import daisy
import daisy.logging
import zarr


def volume_shape(path):
    """(z, y, x) of the array unet reads: VOL.zarr/ARRAY, or an OME-Zarr group's first dataset."""
    node = zarr.open(path, mode="r")
    if isinstance(node, zarr.Group):
        attrs = node.attrs.asdict()
        multiscales = attrs.get("ome", attrs).get("multiscales")
        if not multiscales:
            sys.exit(f"{path}: a Zarr group without OME multiscales; name the array inside it")
        node = node[multiscales[0]["datasets"][0]["path"]]
    return tuple(node.shape[-3:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--block", required=True, help="Z,Y,X voxels, whole output chunks")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--unet", default="unet", help="the unet binary")
    parser.add_argument("--log-dir", default="daisy_logs", help="daisy's per-worker logs")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds a block may take before daisy hands it out again")
    parser.add_argument("unet_args", nargs="*", help="more `unet predict` flags, after --")
    args = parser.parse_args()

    shape = volume_shape(args.input)
    block = tuple(int(n) for n in args.block.split(","))
    command = [args.unet, "predict", "--input", args.input, "--out", args.out,
               "--block", args.block, "--daisy-worker", *args.unet_args]

    def worker(*, context):
        # One unet process per worker slot; it takes blocks until daisy has none left.
        env = dict(os.environ, DAISY_CONTEXT=context.to_env())
        subprocess.run(command, env=env, check=True)

    daisy.logging.set_log_basedir(args.log_dir)
    task = daisy.Task(
        task_id="unet-predict",
        total_roi=daisy.Roi((0, 0, 0), shape),
        read_roi=daisy.Roi((0, 0, 0), block),
        write_roi=daisy.Roi((0, 0, 0), block),
        process_function=worker,
        read_write_conflict=False,
        fit="shrink",
        max_workers=args.workers,
        timeout=args.timeout,
    )
    # unet's store keeps the done-markers; daisy's own tracking would only duplicate them.
    ok = daisy.run_blockwise([task], block_tracking=False)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
