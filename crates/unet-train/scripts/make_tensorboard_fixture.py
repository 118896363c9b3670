"""Golden TensorBoard event file for `crates/unet-train/tests/tensorboard.rs`.

    python3 crates/unet-train/scripts/make_tensorboard_fixture.py          # write the fixture
    python3 crates/unet-train/scripts/make_tensorboard_fixture.py RUN/tb   # check our files

Writes `tests/fixtures/tensorboard/events.out.tfevents.*` with PyTorch's `SummaryWriter` (the
writer the reference's `--tensorboard` used): the scalars listed in `EXPECTED`, which the Rust
test reads back with `unet_train::tensorboard::read_scalars`. With a directory argument, reads
every event file there with TensorBoard's own `EventAccumulator` and prints the scalars, to
check files written by unet-rs. Needs `pip install torch tensorboard`; the tests do not.
"""

import glob
import os
import shutil
import sys

EXPECTED = [
    ("train/loss", 1, 0.5797),
    ("train/loss", 2, 0.3885),
    ("val/mean_iou", 1, 0.5056),
    ("val/mean_iou", 2, 0.7627),
    ("lr", 2, 0.0009766),
]


def write_fixture():
    from torch.utils.tensorboard import SummaryWriter

    out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tensorboard")
    shutil.rmtree(out, ignore_errors=True)
    writer = SummaryWriter(log_dir=out)
    for tag, step, value in EXPECTED:
        writer.add_scalar(tag, value, step)
    writer.close()
    print("wrote", glob.glob(os.path.join(out, "events.out.tfevents.*")))


def check(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(directory)
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        print(tag, [(e.step, round(e.value, 4)) for e in events])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        check(sys.argv[1])
    else:
        write_fixture()
