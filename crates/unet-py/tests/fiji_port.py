"""A Python port of the ISBI 2012 scoring (Fiji): V-Rand and V-Info after border thinning, and the
pixel F-score, per threshold, written from the Java of Fiji's `trainableSegmentation`
(`utils.WatershedTransform2D`, `metrics.RandError`, `metrics.VariationOfInformation`).

It is the independent oracle of the thinned scores in test_scores.py, and the "Python port" that
bench/bench.py times `unet_rs.scores` against. It does with numpy and scipy what they can do
(connected components, the contingency table, the sums); the thinning is the Java's flooding
(Soille & Vincent 1990) one pixel at a time, because no Python library has Fiji's: its pixel order
(column by column), its FIFO and its single global `flag` decide where the 1-pixel lines fall.

Per section and threshold t:
- proposal: the image that is 0 on `P > t` (cell) and 255 elsewhere (membrane), flooded with
  4-connectivity; each basin is a segment, the watershed lines (label 0) are background;
- truth: the 4-connected components of `labels > 0`; truth background is left out;
- Fiji's N^2-normalised foreground-restricted Rand F-score and information-theoretic F-score,
  where every proposal background pixel counts as a segment of its own.
"""

from collections import deque

import numpy as np
from scipy import ndimage

MASK, WSHED, INIT, INQUEUE = -2, 0, -1, -3


def fiji_thresholds(lo=0.0, hi=0.9, step=0.1):
    """Fiji's thresholds: accumulated by repeated addition, as its loop does."""
    out, t = [], lo
    while t <= hi:
        out.append(t)
        t += step
    return out


def watershed(image):
    """Fiji's WatershedTransform2D (4-connected) of a 2-D integer image: basin labels 1.., 0 on
    the watershed lines. Pixels are indexed as the Java's `tabLabels[x][y]`: x * height + y."""
    height, width = image.shape
    values = image.T.ravel().tolist()
    n = len(values)
    # Collections.sort is stable: equal values keep the column-major extraction order.
    order = sorted(range(n), key=values.__getitem__)

    def neighbours(p):
        x, y = divmod(p, height)
        # Neighborhood2DC4's order: left, up, right, down.
        if x > 0:
            yield p - height
        if y > 0:
            yield p - 1
        if x + 1 < width:
            yield p + height
        if y + 1 < height:
            yield p + 1

    labels = [INIT] * n
    current_label = 0
    flag = False
    fifo = deque()
    h_max = values[order[-1]]
    current = first = second = 0
    h = values[order[0]]
    while current < n and h <= h_max:
        h = values[order[current]]
        # Mask the pixels of level h; queue those next to a basin or a line.
        for k in range(first, n):
            p = order[k]
            if values[p] != h:
                first = k
                break
            labels[p] = MASK
            for q in neighbours(p):
                if labels[q] >= WSHED:
                    fifo.append(p)
                    labels[p] = INQUEUE
                    break
        # Grow the basins over level h.
        while fifo:
            p = fifo.popleft()
            for q in neighbours(p):
                lq = labels[q]
                if lq > 0:
                    lp = labels[p]
                    if lp == INQUEUE or (lp == WSHED and flag):
                        labels[p] = lq
                    elif lp > 0 and lp != lq:
                        labels[p] = WSHED
                        flag = False
                elif lq == WSHED:
                    if labels[p] == INQUEUE:
                        labels[p] = WSHED
                        flag = True
                elif lq == MASK:
                    labels[q] = INQUEUE
                    fifo.append(q)
        # New minima at level h.
        for k in range(second, n):
            p = order[k]
            if values[p] != h:
                second = k
                break
            current += 1
            if labels[p] == MASK:
                current_label += 1
                labels[p] = current_label
                fifo.append(p)
                while fifo:
                    p2 = fifo.popleft()
                    for q in neighbours(p2):
                        if labels[q] == MASK:
                            labels[q] = current_label
                            fifo.append(q)
    out = np.array([0 if v == INIT else v for v in labels], dtype=np.int64)
    return out.reshape(width, height).T


def fiji_v_scores(truth, proposal):
    """Fiji's foreground-restricted V-Rand and V-Info (N^2-normalised). truth: segments 1.., 0 left
    out; proposal: segments 1.., 0 = background, each pixel a segment of its own."""
    n = float(np.count_nonzero(truth))
    pij = np.zeros((truth.max() + 1, proposal.max() + 1))
    np.add.at(pij, (truth.ravel(), proposal.ravel()), 1.0)
    pij /= n
    ai = pij[1:, :].sum(axis=1)
    bj = pij[1:, 1:].sum(axis=0)
    aux = pij[1:, 0].sum()
    sum_a2 = (ai * ai).sum()
    sum_b2 = (bj * bj).sum() + aux / n
    sum_ab2 = (pij[1:, 1:] ** 2).sum() + aux / n
    precision, recall = sum_ab2 / sum_b2, sum_ab2 / sum_a2
    v_rand = 2 * precision * recall / (precision + recall)

    def xlogx(v):
        v = v[v != 0]
        return (v * np.log(v)).sum()

    sum_a = xlogx(ai)
    sum_b = xlogx(bj) - aux * np.log(n)
    sum_ab = xlogx(pij[1:, 1:].ravel()) - aux * np.log(n)
    h_a, h_b = -sum_a, -sum_b
    h_ab, h_ba = sum_b - sum_ab, sum_a - sum_ab
    precision = (h_a - h_ab) / h_a if h_a != 0 else 0.0
    recall = (h_b - h_ba) / h_b if h_b != 0 else 0.0
    if h_a == 0:
        precision, recall = 0.0, 1.0
    if h_b == 0:
        precision, recall = 1.0, 0.0
    v_info = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return v_rand, v_info


def fiji_scores(prob, labels, thresholds=None):
    """The ISBI scores of a stack (N, H, W): per threshold, V-Rand and V-Info after thinning,
    averaged over sections, and the pixel F-score pooled over sections (cell positive)."""
    thresholds = fiji_thresholds() if thresholds is None else thresholds
    truths = [ndimage.label(section > 0)[0] for section in labels]
    v_rand, v_info, pixel_f = [], [], []
    for t in thresholds:
        rands, infos, tp, fp, fn = [], [], 0, 0, 0
        for p, truth, section in zip(prob, truths, labels):
            cell = p.astype(np.float64) > t
            proposal = watershed(np.where(cell, 0, 255))
            r, i = fiji_v_scores(truth, proposal)
            rands.append(r)
            infos.append(i)
            true = section > 0
            tp += int(np.count_nonzero(cell & true))
            fp += int(np.count_nonzero(cell & ~true))
            fn += int(np.count_nonzero(~cell & true))
        v_rand.append(float(np.mean(rands)))
        v_info.append(float(np.mean(infos)))
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        pixel_f.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {"thresholds": thresholds, "v_rand": v_rand, "v_info": v_info, "pixel_f": pixel_f}
