"""examples/torch_dataset.py imports without torch (its torch imports are inside functions) and
its array helpers give the reference's sizes: 572 x 572 in, the central 388 x 388 out."""

import importlib.util
import pathlib

import numpy as np

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "torch_dataset.py"


def test_example_helpers():
    spec = importlib.util.spec_from_file_location("torch_dataset", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    section = np.random.default_rng(0).random((512, 512))
    x = example.to_net_input(section)
    assert x.shape == (572, 572) and x.dtype == np.float32
    np.testing.assert_allclose(x[30:542, 30:542], (section - 0.495) / 0.173, rtol=1e-6)
    assert example.centre(section).shape == (388, 388)
    np.testing.assert_array_equal(example.centre(section), section[62:450, 62:450])
