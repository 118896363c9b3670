"""examples/torch_dataset.py without torch (its torch imports are inside functions or
optional): the array helpers give the reference's sizes (572 x 572 in, the central 388 x 388
out), and its Dataset's items are reproducible, new every epoch, and survive pickling (DataLoader
workers started by "spawn")."""

import importlib.util
import pathlib
import pickle
import sys

import numpy as np
import pytest

import unet_rs

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "torch_dataset.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("torch_dataset", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["torch_dataset"] = module  # pickle finds the Dataset class by its module
    spec.loader.exec_module(module)
    return module


def test_example_helpers(example):
    section = np.random.default_rng(0).random((512, 512))
    x = example.to_net_input(section)
    assert x.shape == (572, 572) and x.dtype == np.float32
    np.testing.assert_allclose(x[30:542, 30:542], (section - 0.495) / 0.173, rtol=1e-6)
    np.testing.assert_array_equal(example.centre(section), section[62:450, 62:450])


def test_example_dataset(example, isbi):
    images, labels = isbi
    ds = example.ISBIDataset(images, labels, range(0, 3), augment=True, seed=5)
    assert len(ds) == 3
    image, label, weight = ds[1]
    assert image.shape == (1, 572, 572) and image.dtype == np.float32
    assert label.shape == weight.shape == (388, 388)
    assert label.dtype == np.int64 and set(np.unique(label)) <= {0, 1}
    assert weight.dtype == np.float32 and weight.min() > 0
    again = pickle.loads(pickle.dumps(ds))[1]
    for a, b in zip((image, label, weight), again):
        np.testing.assert_array_equal(a, b)
    ds.set_epoch(1)
    assert not np.array_equal(ds[1][0], image)
    plain = example.ISBIDataset(images, labels, [4], augment=False)
    _, label4, weight4 = plain[0]
    np.testing.assert_array_equal(label4, example.centre(labels[4] > 0))
    np.testing.assert_array_equal(weight4, example.centre(unet_rs.weight_map(labels[4])))
