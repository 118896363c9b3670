"""unet_rs.predict: the built-in model segments ISBI sections, equals `unet predict` and the
same model given by path or as a package, and refuses bad inputs."""

import subprocess

import numpy as np
import pytest
import tifffile

import unet_rs

CROP = (slice(100, 228), slice(200, 328))  # 128 x 128: quick in the dev profile


@pytest.fixture(scope="module")
def crops(isbi):
    images, labels = isbi
    return images[27:29][(slice(None),) + CROP], labels[27:29][(slice(None),) + CROP]


@pytest.fixture(scope="module")
def prob(crops):
    return unet_rs.predict(crops[0])


def test_the_builtin_model_segments_validation_sections(crops, prob):
    images, labels = crops
    assert prob.shape == images.shape and prob.dtype == np.float32 and prob.flags.c_contiguous
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    accuracy = np.mean((prob > 0.5) == (labels > 0))
    assert accuracy > 0.85, accuracy


def test_pages_dtypes_and_strides_agree(crops, prob):
    images = crops[0]
    np.testing.assert_array_equal(unet_rs.predict(images[1]), prob[1])
    np.testing.assert_allclose(unet_rs.predict(images[1] / 255.0), prob[1], atol=1e-6)
    np.testing.assert_allclose(
        unet_rs.predict(images[1].astype(np.uint16) * 257), prob[1], atol=1e-6
    )
    flipped = images[1][:, ::-1]
    np.testing.assert_array_equal(
        unet_rs.predict(flipped), unet_rs.predict(np.ascontiguousarray(flipped))
    )


def test_tta_is_close_to_the_plain_prediction(crops, prob):
    tta = unet_rs.predict(crops[0][0], tta=True)
    assert tta.shape == prob[0].shape
    assert np.mean((tta > 0.5) == (prob[0] > 0.5)) > 0.95


def test_model_by_path_is_the_builtin(crops, prob, repo):
    by_path = unet_rs.predict(crops[0][0], model=repo / "models" / "default.safetensors")
    np.testing.assert_array_equal(by_path, prob[0])
    np.testing.assert_array_equal(
        unet_rs.predict(crops[0][0], model=str(repo / "models" / "default.safetensors")), prob[0]
    )


def test_equals_unet_predict_and_packages(crops, prob, unet_bin, tmp_path):
    tifffile.imwrite(tmp_path / "in.tif", crops[0], photometric="minisblack")
    subprocess.run(
        [unet_bin, "predict", "--input", str(tmp_path / "in.tif"), "--out", str(tmp_path / "p.tif")],
        check=True,
    )
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p.tif"), prob)
    package = tmp_path / "m.bioimageio.zip"
    subprocess.run([unet_bin, "export", "--out", str(package)], check=True)
    np.testing.assert_array_equal(unet_rs.predict(crops[0], model=package), prob)


def test_bad_inputs_raise(crops, tmp_path):
    image = crops[0][0]
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        unet_rs.predict(image, model=tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(OSError, match="junk.safetensors"):
        unet_rs.predict(image, model=junk)
    with pytest.raises(ValueError, match="dimension"):
        unet_rs.predict(image[0])
    with pytest.raises(ValueError, match="input channel"):
        unet_rs.predict(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="empty"):
        unet_rs.predict(np.zeros((0, 16), np.float32))
    bad = image / 255.0
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match=r"NaN at \[3, 4\]"):
        unet_rs.predict(bad)
    with pytest.raises(TypeError, match="image"):
        unet_rs.predict(np.zeros((16, 16), np.complex64))


def test_channels_in_and_class_probabilities_out_equal_unet_predict(isbi, unet_bin, tmp_path):
    """A model of three input channels and three classes, trained here for one epoch with the
    `unet` binary on 16-bit three-channel crops: predict gives (N, K, H, W) probabilities that
    sum to one, equal to `unet predict`'s hyperstack of the same sections."""
    images, labels = isbi
    grey = images[:3, 200:296, 200:296].astype(np.uint16)
    stack = np.stack([grey * 257, 5000 + grey * 100, 65535 - grey * 200], axis=1)
    classes = (labels[:3, 200:296, 200:296] > 0).astype(np.uint8)
    classes[(classes == 1) & (grey < 110)] = 2
    tifffile.imwrite(tmp_path / "images.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    tifffile.imwrite(tmp_path / "classes.tif", classes, photometric="minisblack")
    subprocess.run(
        [unet_bin, "train", "--images", "images.tif", "--labels", "classes.tif",
         "--classes", "3", "--normalisation", "dataset", "--epochs", "1", "--input-tile", "64",
         "--batch-size", "3", "--train-fraction", "0.6", "--run-dir", "run", "--quiet"],
        check=True, cwd=tmp_path, capture_output=True,
    )
    model = tmp_path / "run" / "best.safetensors"
    probs = unet_rs.predict(stack, model=model)
    assert probs.shape == (3, 3, 96, 96) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert unet_rs.predict(stack[0], model=model).shape == (3, 96, 96)
    subprocess.run(
        [unet_bin, "predict", "--model", str(model), "--input", str(tmp_path / "images.tif"),
         "--out", str(tmp_path / "p.tif")],
        check=True, capture_output=True,
    )
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p.tif").reshape(probs.shape), probs)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        unet_rs.predict(grey[0], model=model)
