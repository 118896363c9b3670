"""Shared fixtures: the ISBI 2012 stacks (found as the Rust tests find them: UNET_DATA, else
data/isbi2012/ in the checkout) and the `unet` binary when the caller names one (UNET_BIN)."""

import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


def _data_dir():
    env = os.environ.get("UNET_DATA")
    candidates = [pathlib.Path(env)] if env else []
    candidates.append(REPO / "data" / "isbi2012")
    for d in candidates:
        if (d / "train-volume.tif").is_file() and (d / "train-labels.tif").is_file():
            return d
    return None


@pytest.fixture(scope="session")
def isbi():
    """(images uint8 (30, 512, 512), labels uint8 (30, 512, 512), 0 membrane / 255 cell)."""
    import tifffile

    d = _data_dir()
    if d is None:
        message = "no ISBI 2012 data: set UNET_DATA to a directory with train-volume.tif"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    images = tifffile.imread(d / "train-volume.tif")
    labels = tifffile.imread(d / "train-labels.tif")
    assert images.shape == labels.shape == (30, 512, 512)
    return images, labels


@pytest.fixture(scope="session")
def unet_bin():
    """The `unet` binary named by UNET_BIN (cargo xtask test passes the one it built)."""
    path = os.environ.get("UNET_BIN")
    if not path:
        message = "UNET_BIN is not set: no `unet` binary to compare with"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert pathlib.Path(path).is_file(), path
    return path


@pytest.fixture(scope="session")
def repo():
    return REPO


def two_cells():
    """Two 2x2 cells with a 3-pixel gap of membrane between them (unet-weights' doc example)."""
    return np.array(
        [[255, 255, 0, 0, 0, 255, 255], [255, 255, 0, 0, 0, 255, 255]], dtype=np.uint8
    )
