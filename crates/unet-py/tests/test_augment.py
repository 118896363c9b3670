"""unet_rs.Augmenter: reproducible by index, image, label and weights moved together, labels
kept as class ids, bad inputs refused."""

import numpy as np
import scipy.stats
import pytest

import unet_rs


def sample_arrays(h=96, w=80):
    y, x = np.mgrid[0:h, 0:w]
    image = ((x * 3 + y * 5) % 256).astype(np.uint8)
    label = np.where(((x // 10) + (y // 12)) % 2 == 0, 255, 0).astype(np.uint8)
    weight = (1.0 + label / 255.0).astype(np.float32)
    return image, label, weight


def test_same_index_same_result_other_index_differs():
    image, label, weight = sample_arrays()
    aug = unet_rs.Augmenter("reference", seed=3)
    a = aug.sample(7, image, label, weight)
    b = unet_rs.Augmenter("reference", seed=3).sample(7, image, label, weight)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    others = [aug.sample(i, image, label, weight)[0] for i in range(8, 12)]
    assert any(not np.array_equal(a[0], o) for o in others)
    other_seed = unet_rs.Augmenter("reference", seed=4).sample(7, image, label, weight)[0]
    assert not np.array_equal(a[0], other_seed)


def test_calls_count_the_index():
    image, label, _ = sample_arrays()
    aug = unet_rs.Augmenter("paper", seed=11)
    first, second = aug(image, label), aug(image, label)
    for got, index in [(first, 0), (second, 1)]:
        want = aug.sample(index, image, label)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("preset", ["reference", "paper", "robust"])
def test_outputs_and_labels_stay_class_ids(preset):
    image, label, weight = sample_arrays()
    aug = unet_rs.Augmenter(preset, seed=1)
    for i in range(6):
        im, lab, wt = aug.sample(i, image, label, weight)
        assert im.dtype == np.float32 and lab.dtype == np.uint8 and wt.dtype == np.float32
        assert im.shape == lab.shape == wt.shape == image.shape
        assert all(a.flags.c_contiguous for a in (im, lab, wt))
        assert set(np.unique(lab)) <= {0, 255}
    # 0/1 labels stay 0/1
    _, lab01 = aug.sample(0, image, (label > 0).astype(np.int32))
    assert set(np.unique(lab01)) <= {0, 1}


def test_weights_move_with_the_label():
    image, label, weight = sample_arrays()
    # Nearest interpolation moves weights as labels are moved: w = 1 + label / 255 holds after.
    aug = unet_rs.Augmenter("paper", seed=5, interpolation="nearest")
    for i in range(4):
        _, lab, wt = aug.sample(i, image, label, weight)
        np.testing.assert_array_equal(wt, 1.0 + lab / 255.0)


def test_preset_none_gives_the_input_back_in_unit_grey():
    image, label, weight = sample_arrays()
    im, lab, wt = unet_rs.Augmenter("none").sample(0, image, label, weight)
    np.testing.assert_array_equal(im, image.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(lab, label)
    np.testing.assert_array_equal(wt, weight)
    # uint16 is scaled by 65535, floats are kept, channels stay planes
    im16, _ = unet_rs.Augmenter("none").sample(0, image.astype(np.uint16) * 257, label)
    np.testing.assert_allclose(im16, image / 255.0, atol=1e-6)
    two = np.stack([image, 255 - image]).astype(np.float64) / 255.0
    im2, _ = unet_rs.Augmenter("none").sample(0, two, label)
    assert im2.shape == (2,) + image.shape
    np.testing.assert_allclose(im2, two, atol=1e-7)


def test_channels_share_the_geometry_and_draw_their_own_intensity():
    image, label, _ = sample_arrays()
    grey = image.astype(np.float32) / 255.0
    planes = np.stack([grey, grey])
    augmenter = unet_rs.Augmenter("paper", seed=2)
    im, lab = augmenter.sample(3, planes, label)
    # Channel 0 moves as the grey image alone does; channel 1 gets its own brightness and
    # noise, on the same deformation (their ranks agree almost everywhere).
    alone, lab_alone = augmenter.sample(3, grey, label)
    np.testing.assert_array_equal(im[0], alone)
    np.testing.assert_array_equal(lab, lab_alone)
    assert not np.array_equal(im[0], im[1])
    assert scipy.stats.spearmanr(im[0].ravel(), im[1].ravel()).statistic > 0.9


def test_overrides():
    image, label, weight = sample_arrays()
    im, lab, wt = unet_rs.Augmenter("reference", seed=0, crop=(32, 40)).sample(0, image, label, weight)
    assert im.shape == lab.shape == wt.shape == (32, 40)
    quiet = unet_rs.Augmenter("reference", noise_std=0.0, elastic_smoothing="exact", border="constant", fill=(0.0, 0, 0.0))
    assert quiet.preset == "reference" and quiet.seed == 0
    assert "reference" in repr(quiet)


def test_strided_input_equals_contiguous():
    image, label, weight = sample_arrays()
    aug = unet_rs.Augmenter("reference", seed=9)
    s = (slice(None, None, 2), slice(None, None, -1))
    a = aug.sample(1, image[s], label[s], weight[s])
    b = aug.sample(1, *(np.ascontiguousarray(x[s]) for x in (image, label, weight)))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_bad_arguments_raise():
    image, label, weight = sample_arrays()
    with pytest.raises(TypeError, match="'sigma'|\"sigma\""):
        unet_rs.Augmenter("reference", sigma=3)
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        unet_rs.Augmenter("strong")
    with pytest.raises(ValueError, match="no Gaussian noise step"):
        unet_rs.Augmenter("paper", noise_std=0.1)
    with pytest.raises(ValueError, match="interpolation"):
        unet_rs.Augmenter("paper", interpolation="lanczos")
    with pytest.raises(TypeError, match="crop"):
        unet_rs.Augmenter("paper", crop="big")
    aug = unet_rs.Augmenter("reference")
    with pytest.raises(ValueError, match="label has shape"):
        aug.sample(0, image, label[:10])
    with pytest.raises(ValueError, match="weight has shape"):
        aug.sample(0, image, label, weight[:, :10])
    with pytest.raises(ValueError, match="dimension"):
        aug.sample(0, image[0], label)
    with pytest.raises(ValueError, match="empty"):
        aug.sample(0, image[:0], label[:0])
    with pytest.raises(ValueError, match="300"):
        aug.sample(0, image, label.astype(np.int32) + 45)
    with pytest.raises(ValueError, match="crop"):
        unet_rs.Augmenter("none", crop=(500, 500)).sample(0, image, label)
    with pytest.raises(TypeError, match="image"):
        aug.sample(0, image.astype(np.complex64), label)
    with pytest.raises(OverflowError):
        aug.sample(-1, image, label)
