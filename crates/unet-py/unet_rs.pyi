"""Type stubs of unet_rs, the Python package of unet-rs (crates/unet-py).

maturin installs this file and a py.typed marker beside the extension module.
"""

import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str

_Array = npt.ArrayLike
_F32 = npt.NDArray[np.float32]
_U8 = npt.NDArray[np.uint8]

def weight_map(
    labels: _Array,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weight: str = "total_over_count",
    connectivity: int = 4,
    border_term: str = "background",
) -> _F32:
    """The U-Net paper's loss weight map, exact.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2)), with d1, d2 the distances to
    the nearest and second-nearest cell (connected components of label > 0).

    labels: (H, W) or (N, H, W), binary (0 membrane, 255 or 1 cell), any numeric dtype.
    class_weight: "total_over_count", "mean1" or "none". connectivity: 4 or 8.
    border_term: "background" or "all_pixels".
    Returns float32 of the labels' shape. Raises ValueError / TypeError on bad input.
    """

class Augmenter:
    """Joint augmentation of image, label and weights, reproducible by index.

    Augmenter(preset="reference", seed=0, *, interpolation=..., border=..., fill=...,
    elastic_smoothing=..., noise_std=..., crop=...); presets "none", "reference", "paper",
    "robust". Unknown keyword arguments raise TypeError.
    """

    def __init__(
        self,
        preset: str = "reference",
        seed: int = 0,
        *,
        interpolation: str = ...,
        border: str = ...,
        fill: Tuple[float, int, float] = ...,
        elastic_smoothing: str = ...,
        noise_std: float = ...,
        crop: Tuple[int, int] = ...,
    ) -> None: ...
    @property
    def preset(self) -> str:
        """The preset's name."""
    @property
    def seed(self) -> int:
        """The base seed."""
    @overload
    def __call__(self, image: _Array, label: _Array, weight: None = None) -> Tuple[_F32, _U8]: ...
    @overload
    def __call__(self, image: _Array, label: _Array, weight: _Array) -> Tuple[_F32, _U8, _F32]: ...
    @overload
    def sample(
        self, index: int, image: _Array, label: _Array, weight: None = None
    ) -> Tuple[_F32, _U8]: ...
    @overload
    def sample(
        self, index: int, image: _Array, label: _Array, weight: _Array
    ) -> Tuple[_F32, _U8, _F32]: ...

def scores(
    prob: _Array,
    labels: _Array,
    thresholds: Optional[Sequence[float]] = None,
    thinning: str = "fiji",
    pixel_threshold: float = 0.5,
) -> Dict[str, Any]:
    """Pixel accuracy, IoU, Dice, and the ISBI 2012 V-Rand / V-Info per threshold and best.

    prob: P(cell) in [0, 1], (H, W) or (N, H, W). labels: the same shape, binary.
    thinning: "fiji" (the challenge's) or "none".
    """

def predict(
    image: _Array,
    model: Optional[Union[str, "os.PathLike[str]"]] = None,
    tta: bool = False,
) -> _F32:
    """P(cell) by overlap-tile prediction on the CPU, as `unet predict`: (H, W) or (N, H, W);
    for a model of K > 2 classes every class's probability, (K, H, W) or (N, K, H, W).

    image: (H, W) or (N, H, W) grey (uint8 / 255, uint16 / 65535, floats in [0, 1]); for a
        model of C > 1 input channels (C, H, W) or (N, C, H, W).
    model: None (the built-in default model), a .safetensors checkpoint or a .bioimageio.zip.
    """
