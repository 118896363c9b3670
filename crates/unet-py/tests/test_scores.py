"""unet_rs.scores: perfect predictions score 1; pixel scores against numpy; V-Rand and V-Info
unthinned against scikit-image's contingency table, and thinned (the official scores) against a
Python port of the Fiji scoring (fiji_port.py); the `unet score` command; bad inputs."""

import subprocess

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage.measure import label as skimage_label
from skimage.metrics import contingency_table

import unet_rs
from fiji_port import fiji_scores

SECTIONS = [0, 14, 29]


def imperfect(labels, seed=0):
    """A plausible P(cell): the label blurred, with noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    p = ndimage.gaussian_filter(labels.astype(np.float64) / 255.0, (0, 2, 2))
    return np.clip(p + rng.normal(0, 0.15, p.shape), 0, 1).astype(np.float32)


def numpy_pixel_scores(prob, labels, t=0.5):
    acc, iou, dice = [], [], []
    for p, l in zip(prob, labels):
        pred, true = p > t, l > 0
        acc.append(np.mean(pred == true))
        ious = [np.sum(a & b) / np.sum(a | b) for a, b in ((~pred, ~true), (pred, true))]
        iou.append(np.mean(ious))
        dice.append(2 * np.sum(pred & true) / (pred.sum() + true.sum()))
    return np.mean(acc), np.mean(iou), np.mean(dice)


def skimage_v_scores(p, l, t):
    """Foreground-restricted V-Rand and V-Info of one section without thinning: truth cells and
    proposal cells are 4-connected components; proposal background on truth cells: singletons."""
    truth = skimage_label(l > 0, connectivity=1)
    proposal = skimage_label(p > t, connectivity=1).astype(np.int64)
    background = proposal == 0
    proposal[background] = proposal.max() + 1 + np.arange(background.sum())
    c = contingency_table(truth, proposal, ignore_labels=[0]).tocsr()
    c.eliminate_zeros()
    n = c.sum()
    s = np.asarray(c.sum(axis=1)).ravel()
    s = s[s > 0]
    tt = np.asarray(c.sum(axis=0)).ravel()
    tt = tt[tt > 0]
    cij = c.data.astype(np.float64)
    v_rand = 2 * np.sum(cij**2) / (np.sum(s**2) + np.sum(tt**2))
    xlogx = lambda x: np.sum(x * np.log(x))  # noqa: E731
    h_s = np.log(n) - xlogx(s) / n if len(s) > 1 else 0.0
    h_t = np.log(n) - xlogx(tt) / n if len(tt) > 1 else 0.0
    h_joint = np.log(n) - xlogx(cij) / n
    mutual = h_s + h_t - h_joint
    precision, recall = mutual / h_s, mutual / h_t
    v_info = 2 * precision * recall / (precision + recall)
    return v_rand, v_info


def test_a_perfect_prediction_scores_one(isbi):
    labels = isbi[1][SECTIONS]
    r = unet_rs.scores(labels / 255.0, labels)
    for key in ["pixel_accuracy", "iou", "dice", "v_rand", "v_info"]:
        assert r[key] == pytest.approx(1.0, abs=1e-12), key
    assert r["pixel_error"] == 0.0 and r["sections"] == 3 and r["thinning"] == "fiji"
    assert r["iou_per_class"] == [1.0, 1.0]
    assert len(r["thresholds"]) == len(r["v_rand_per_threshold"]) == 10


def test_pixel_scores_equal_numpy(isbi):
    labels = isbi[1][SECTIONS]
    prob = imperfect(labels)
    r = unet_rs.scores(prob, labels)
    acc, iou, dice = numpy_pixel_scores(prob, labels)
    assert r["pixel_accuracy"] == pytest.approx(acc, abs=1e-12)
    assert r["iou"] == pytest.approx(iou, abs=1e-12)
    assert r["dice"] == pytest.approx(dice, abs=1e-12)
    assert 0.5 < acc < 1.0
    r3 = unet_rs.scores(prob, labels, pixel_threshold=0.3)
    assert r3["pixel_accuracy"] == pytest.approx(numpy_pixel_scores(prob, labels, 0.3)[0], abs=1e-12)


def test_unthinned_v_scores_equal_skimage(isbi):
    labels = isbi[1][SECTIONS]
    prob = imperfect(labels, seed=1)
    thresholds = [0.3, 0.5, 0.7]
    r = unet_rs.scores(prob, labels, thresholds=thresholds, thinning="none")
    assert r["thinning"] == "none" and r["thresholds"] == thresholds
    for i, t in enumerate(thresholds):
        per = [skimage_v_scores(p, l, t) for p, l in zip(prob, labels)]
        assert r["v_rand_per_threshold"][i] == pytest.approx(np.mean([v[0] for v in per]), abs=1e-9)
        assert r["v_info_per_threshold"][i] == pytest.approx(np.mean([v[1] for v in per]), abs=1e-9)
    best = int(np.argmax(r["v_rand_per_threshold"]))
    assert r["v_rand"] == r["v_rand_per_threshold"][best]
    assert r["v_rand_threshold"] == thresholds[best]
    assert len(r["v_rand_per_section"]) == 3


def test_thinned_scores_equal_the_fiji_port(isbi):
    """The official scores (with Fiji's border thinning) against a Python port of the Fiji
    scoring: 128 x 128 crops of three sections at five thresholds, and one whole section."""
    labels = isbi[1][SECTIONS][:, 200:328, 100:228]
    prob = imperfect(labels, seed=3)
    thresholds = [0.1, 0.3, 0.5, 0.7, 0.9]
    r = unet_rs.scores(prob, labels, thresholds=thresholds)
    port = fiji_scores(prob, labels, thresholds)
    assert r["thinning"] == "fiji"
    assert r["v_rand_per_threshold"] == pytest.approx(port["v_rand"], abs=1e-12)
    assert r["v_info_per_threshold"] == pytest.approx(port["v_info"], abs=1e-12)
    assert r["isbi_pixel_error"] == pytest.approx(1 - max(port["pixel_f"]), abs=1e-12)
    # The thinning matters here: the unthinned scores differ.
    none = unet_rs.scores(prob, labels, thresholds=thresholds, thinning="none")
    assert max(abs(a - b) for a, b in zip(none["v_rand_per_threshold"], port["v_rand"])) > 1e-3

    whole = isbi[1][SECTIONS[1:2]]
    prob = imperfect(whole, seed=4)
    r = unet_rs.scores(prob, whole, thresholds=[0.5])
    port = fiji_scores(prob, whole, [0.5])
    assert r["v_rand"] == pytest.approx(port["v_rand"][0], abs=1e-12)
    assert r["v_info"] == pytest.approx(port["v_info"][0], abs=1e-12)


def test_thinned_scores_equal_the_unet_score_command(isbi, unet_bin, tmp_path):
    labels = isbi[1][SECTIONS]
    prob = imperfect(labels, seed=2)
    tifffile.imwrite(tmp_path / "p.tif", prob, photometric="minisblack")
    tifffile.imwrite(tmp_path / "l.tif", labels, photometric="minisblack")
    subprocess.run(
        [unet_bin, "score", "--pred", str(tmp_path / "p.tif"), "--labels", str(tmp_path / "l.tif"),
         "--json", str(tmp_path / "s.json")],
        check=True,
    )
    import json

    cli = json.loads((tmp_path / "s.json").read_text())
    r = unet_rs.scores(prob, labels)
    for key in ["pixel_accuracy", "v_rand", "v_info", "v_rand_threshold", "isbi_pixel_error"]:
        assert r[key] == cli[key], key
    assert r["iou"] == cli["mean_iou"] and r["dice"] == cli["dice"]


def test_one_section_and_dtypes(isbi):
    labels = isbi[1][0]
    prob = imperfect(labels[None])[0]
    r2 = unet_rs.scores(prob, labels)
    r3 = unet_rs.scores(prob[None], labels[None] > 0)
    assert r2["v_rand"] == r3["v_rand"] and r2["sections"] == 1
    assert unet_rs.scores(prob.astype(np.float64), labels.astype(np.int16))["v_info"] == r2["v_info"]


@pytest.mark.parametrize(
    "prob, labels, kwargs, error, words",
    [
        (np.full((4, 4), 0.5), np.zeros((4, 5)), {}, ValueError, "same"),
        (np.full(4, 0.5), np.zeros(4), {}, ValueError, "dimension"),
        (np.zeros((0, 4)), np.zeros((0, 4)), {}, ValueError, "empty"),
        (np.array([[0.5, np.nan]]), np.array([[255, 0]]), {}, ValueError, "NaN at \\[0, 1\\]"),
        (np.array([[0.5, 1.5]]), np.array([[255, 0]]), {}, ValueError, "outside"),
        (np.array([[0.5, 0.5]]), np.array([[1, 2]]), {}, ValueError, "binary"),
        (np.array([[0.5, 0.5]]), np.array([[0, 0]]), {}, ValueError, "no cell pixels"),
        (np.array([[0.5, 0.5]]), np.array([[255, 0]]), {"thresholds": [1.5]}, ValueError, "threshold"),
        (np.array([[0.5, 0.5]]), np.array([[255, 0]]), {"thresholds": []}, ValueError, "no thresholds"),
        (np.array([[0.5, 0.5]]), np.array([[255, 0]]), {"thinning": "skeleton"}, ValueError, "fiji"),
        (np.array([["a"]]), np.array([[255]]), {}, TypeError, "prob"),
    ],
)
def test_bad_inputs_raise(prob, labels, kwargs, error, words):
    with pytest.raises(error, match=words):
        unet_rs.scores(prob, labels, **kwargs)
