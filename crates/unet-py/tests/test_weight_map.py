"""unet_rs.weight_map against the Rust crate's known values, the `unet weights` command, and an
independent oracle: scipy's Euclidean distance transform of every cell."""

import subprocess

import numpy as np
import pytest
import tifffile
from scipy import ndimage

import unet_rs
from conftest import two_cells

SECTIONS = [0, 14, 29]


def scipy_weight_map(labels, w0=10.0, sigma=5.0, class_weight="total_over_count"):
    """The paper's w(x) the slow way: one EDT per 4-connected cell, d1/d2 the nearest two."""
    cells = labels > 0
    components, count = ndimage.label(cells)  # the default structure is 4-connected
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for k in range(1, count + 1):
        d = ndimage.distance_transform_edt(components != k)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    border[cells] = 0.0
    if count < 2:
        border[:] = 0.0
    if class_weight == "none":
        wc = np.ones(labels.shape)
    else:
        total = labels.size
        wc = np.where(cells, total / cells.sum(), total / (~cells).sum())
    return wc + border


def test_two_cells_known_values():
    w = unet_rs.weight_map(two_cells(), class_weight="none")
    assert w.dtype == np.float32 and w.shape == (2, 7) and w.flags.c_contiguous
    # The middle of the gap is 2 px from each cell (the unet-weights doc example).
    assert w[0, 3] == pytest.approx(1.0 + 10.0 * np.exp(-16.0 / 50.0), abs=1e-5)
    assert w[0, 0] == 1.0


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize("class_weight", ["total_over_count", "none"])
def test_equals_scipy_per_cell_edt(isbi, section, class_weight):
    labels = isbi[1][section]
    ours = unet_rs.weight_map(labels, class_weight=class_weight)
    oracle = scipy_weight_map(labels, class_weight=class_weight)
    assert np.abs(ours - oracle).max() < 1e-4


def test_stack_is_the_sections(isbi):
    labels = isbi[1][SECTIONS]
    stack = unet_rs.weight_map(labels)
    assert stack.shape == (3, 512, 512)
    for i, s in enumerate(SECTIONS):
        np.testing.assert_array_equal(stack[i], unet_rs.weight_map(isbi[1][s]))


def test_class_weights_relate(isbi):
    labels = isbi[1][0]
    cells = labels > 0
    none = unet_rs.weight_map(labels, class_weight="none")
    total = unet_rs.weight_map(labels, class_weight="total_over_count")
    mean1 = unet_rs.weight_map(labels, class_weight="mean1")
    np.testing.assert_array_equal(total, unet_rs.weight_map(labels, class_weight="balanced"))
    wc = np.where(cells, labels.size / cells.sum(), labels.size / (~cells).sum())
    np.testing.assert_allclose(total - none, wc - 1.0, atol=1e-4)
    np.testing.assert_allclose(mean1 - none, wc / 2 - 1.0, atol=1e-4)


def test_any_dtype_and_strides(isbi):
    labels = isbi[1][3]
    expected = unet_rs.weight_map(labels)
    for converted in [
        labels > 0,
        (labels > 0).astype(np.int64),
        labels.astype(np.float32),
        labels.astype(">u2"),  # byte-swapped
        np.asfortranarray(labels),
        labels.tolist(),
    ]:
        np.testing.assert_array_equal(unet_rs.weight_map(converted), expected)
    strided = labels[::2, ::-1]
    np.testing.assert_array_equal(
        unet_rs.weight_map(strided), unet_rs.weight_map(np.ascontiguousarray(strided))
    )


def test_equals_the_unet_weights_command(isbi, unet_bin, tmp_path):
    labels = isbi[1][:2]
    tifffile.imwrite(tmp_path / "labels.tif", labels, photometric="minisblack")
    subprocess.run(
        [unet_bin, "weights", "--labels", str(tmp_path / "labels.tif"), "--out", str(tmp_path / "w.tif")],
        check=True,
    )
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "w.tif"), unet_rs.weight_map(labels))


@pytest.mark.parametrize(
    "labels, kwargs, error, words",
    [
        (np.zeros(5, np.uint8), {}, ValueError, "dimension"),
        (np.zeros((2, 2, 2, 2), np.uint8), {}, ValueError, "dimension"),
        (np.zeros((0, 5), np.uint8), {}, ValueError, "empty"),
        (np.array([[0, 1], [2, 0]]), {}, ValueError, "binary"),
        (np.array([[0, 0.5], [1, 0]]), {}, ValueError, "0.5"),
        (np.array([[0, -1], [1, 0]]), {}, ValueError, "-1"),
        (np.array([[0, np.nan], [1, 0]]), {}, ValueError, "NaN"),
        (two_cells(), {"class_weight": "balance"}, ValueError, "total_over_count"),
        (two_cells(), {"sigma": 0.0}, ValueError, "sigma"),
        (two_cells(), {"w0": -1.0}, ValueError, "w0"),
        (two_cells(), {"connectivity": 6}, ValueError, "connectivity"),
        (two_cells(), {"border_term": "cells"}, ValueError, "all_pixels"),
        (np.zeros((2, 2), np.complex64), {}, TypeError, "complex"),
        (np.array([["a", "b"]]), {}, TypeError, "labels"),
        ("not an array", {}, TypeError, "labels"),
    ],
)
def test_bad_inputs_raise(labels, kwargs, error, words):
    with pytest.raises(error, match=words):
        unet_rs.weight_map(labels, **kwargs)
