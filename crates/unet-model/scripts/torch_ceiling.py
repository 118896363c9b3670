#!/usr/bin/env python3
"""How high can pixel accuracy and mean IoU go on the ISBI 2012 split (sections 0-26 train,
27-29 validate) when compute is no object? A PyTorch U-Net trained on a GPU for a fixed wall
time, scored like `unet evaluate` (docs/RESULTS.md, "The ceiling on a GPU").

usage: torch_ceiling.py DATA.npz NAME BASE_WIDTH LOSS MINUTES [TILE BATCH LR]
  DATA.npz: x (30,512,512) u8 sections, y (30,512,512) 1 = cell, w (30,512,512) the loss weights
            of the default recipe (`unet weights --class-weight none`, w0 10, sigma 5);
  LOSS: wce (border-weighted cross-entropy, the default recipe's) or ce (plain);
  MINUTES: wall time of training; the learning rate follows a cosine over it.
Augmentation as the default recipe's `reference`: dihedral flips, a dense elastic field (alpha
100-300, sigma 10-15) for image, label (nearest) and weights (nearest). Same-padding U-Net with
batch norm, depth 5, widths BASE_WIDTH * 2^k; Adam; bf16 autocast.

Every evaluation scores the 30 sections whole: P(cell) at 0.5, at the threshold that maximises
the training sections' pixel accuracy (fitted on sections 0-26 only), and with 8-fold test-time
augmentation at that threshold. Mean IoU is the reference's: per section, per class, averaged.
Prints and appends JSON lines to $OUT/NAME.jsonl (or ./NAME.jsonl).
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class DoubleConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, base, depth=5):
        super().__init__()
        widths = [base * 2 ** k for k in range(depth)]
        self.downs = nn.ModuleList()
        c = 1
        for f in widths:
            self.downs.append(DoubleConv(c, f))
            c = f
        self.upconvs, self.ups = nn.ModuleList(), nn.ModuleList()
        for f in reversed(widths[:-1]):
            self.upconvs.append(nn.ConvTranspose2d(c, f, 2, stride=2))
            self.ups.append(DoubleConv(2 * f, f))
            c = f
        self.final = nn.Conv2d(c, 2, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        skips = []
        for i, d in enumerate(self.downs):
            x = d(x)
            if i < len(self.downs) - 1:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for up, dc in zip(self.upconvs, self.ups):
            x = up(x)
            x = dc(torch.cat([skips.pop(), x], 1))
        return self.final(x)


def gaussian_blur(field, sigma):
    """Separable Gaussian blur of [N, C, H, W] with reflected borders (scipy's default)."""
    radius = int(4 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, device=field.device, dtype=field.dtype)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    n, c, h, w = field.shape
    f = field.reshape(n * c, 1, h, w)
    f = F.conv2d(F.pad(f, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    f = F.conv2d(F.pad(f, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))
    return f.reshape(n, c, h, w)


def dihedral(t, k):
    """The k-th of the 8 flips and rotations of [..., H, W]."""
    if k >= 4:
        t = t.flip(-1)
    return torch.rot90(t, k % 4, dims=(-2, -1))


def undo_dihedral(t, k):
    t = torch.rot90(t, -(k % 4), dims=(-2, -1))
    return t.flip(-1) if k >= 4 else t


def augmented_batch(x, y, w, batch, tile, gen):
    """Random sections, dihedral transform, dense elastic field, random tile crop."""
    dev = x.device
    idx = torch.randint(0, x.shape[0], (batch,), generator=gen, device="cpu")
    stack = torch.stack([x[idx], y[idx].float(), w[idx]], 1)  # [B, 3, 512, 512]
    stack = torch.stack([dihedral(s, int(torch.randint(0, 8, (1,), generator=gen)))
                         for s in stack])
    n, _, h, wd = stack.shape
    sigma = float(torch.empty(1).uniform_(10, 15, generator=gen))
    alpha = float(torch.empty(1).uniform_(100, 300, generator=gen))
    noise = torch.rand(n, 2, h, wd, generator=gen).to(dev) * 2 - 1
    disp = gaussian_blur(noise, sigma) * alpha  # pixels
    ys, xs = torch.meshgrid(torch.arange(h, device=dev), torch.arange(wd, device=dev),
                            indexing="ij")
    gx = (xs + disp[:, 0]) / (wd - 1) * 2 - 1
    gy = (ys + disp[:, 1]) / (h - 1) * 2 - 1
    grid = torch.stack([gx, gy], -1)
    img = F.grid_sample(stack[:, :1], grid, mode="bilinear", padding_mode="reflection",
                        align_corners=True)
    lw = F.grid_sample(stack[:, 1:], grid, mode="nearest", padding_mode="reflection",
                       align_corners=True)
    oy = int(torch.randint(0, h - tile + 1, (1,), generator=gen))
    ox = int(torch.randint(0, wd - tile + 1, (1,), generator=gen))
    sl = (slice(None), slice(None), slice(oy, oy + tile), slice(ox, ox + tile))
    return img[sl], lw[sl][:, 0].round().long(), lw[sl][:, 1]


@torch.no_grad()
def predict(model, x, tta):
    """P(cell) of whole sections [N, 512, 512]."""
    model.eval()
    out = []
    for s in x:
        s = s[None, None]
        ks = range(8) if tta else [0]
        p = sum(undo_dihedral(torch.softmax(model(dihedral(s, k)).float(), 1)[:, 1], k)
                for k in ks) / len(ks)
        out.append(p[0])
    model.train()
    return torch.stack(out)


def scores(p, y, threshold):
    """Pixel accuracy and the reference's mean IoU over sections."""
    pred = p >= threshold
    truth = y.bool()
    acc = (pred == truth).float().mean((1, 2))
    ious = []
    for cls_pred, cls_truth in ((pred, truth), (~pred, ~truth)):
        inter = (cls_pred & cls_truth).float().sum((1, 2))
        union = (cls_pred | cls_truth).float().sum((1, 2))
        ious.append((inter / union.clamp(min=1)).mean())
    return float(acc.mean()), float(sum(ious) / 2)


def evaluate(model, x, y, tta):
    p = predict(model, x, tta)
    train, val = slice(0, 27), slice(27, 30)
    grid = [t / 100 for t in range(5, 96)]
    fitted = max(grid, key=lambda t: scores(p[train], y[train], t)[0])
    return {
        "val_at_0.5": scores(p[val], y[val], 0.5),
        "train_at_0.5": scores(p[train], y[train], 0.5),
        "fitted_threshold": fitted,
        "val_at_fitted": scores(p[val], y[val], fitted),
        "train_at_fitted": scores(p[train], y[train], fitted),
    }


def main():
    path, name, base, loss, minutes = sys.argv[1:6]
    tile = int(sys.argv[6]) if len(sys.argv) > 6 else 256
    batch = int(sys.argv[7]) if len(sys.argv) > 7 else 8
    lr0 = float(sys.argv[8]) if len(sys.argv) > 8 else 1e-3
    base, budget = int(base), float(minutes) * 60
    torch.manual_seed(2015)
    torch.backends.cudnn.benchmark = True
    dev = os.environ.get("CEILING_DEVICE", "cuda")  # cpu for a smoke test
    data = np.load(path)
    x = torch.tensor(data["x"], dtype=torch.float32, device=dev) / 255
    mean, std = float(x[:27].mean()), float(x[:27].std())
    x = (x - mean) / std
    y = torch.tensor(data["y"], device=dev)
    w = torch.tensor(data["w"].astype(np.float32), device=dev)
    if loss == "ce":
        w = torch.ones_like(w)
    gen = torch.Generator().manual_seed(2015)
    model = UNet(base).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr0)
    log = open(os.path.join(os.environ.get("OUT", "."), name + ".jsonl"), "a")

    def emit(record):
        line = json.dumps(record)
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    every = float(os.environ.get("CEILING_EVAL_EVERY", 60))
    start, step, next_eval, losses = time.time(), 0, every, []
    while True:
        elapsed = time.time() - start
        if elapsed >= budget:
            break
        lr = 1e-5 + (lr0 - 1e-5) * 0.5 * (1 + math.cos(math.pi * elapsed / budget))
        for g in opt.param_groups:
            g["lr"] = lr
        img, lab, wt = augmented_batch(x[:27], y[:27], w[:27], batch, tile, gen)
        with torch.autocast(dev, dtype=torch.bfloat16):
            logits = model(img.contiguous(memory_format=torch.channels_last))
        logp = F.log_softmax(logits.float(), 1).gather(1, lab[:, None])[:, 0]
        l = -(wt * logp).sum() / wt.sum()
        opt.zero_grad(set_to_none=True)
        l.backward()
        opt.step()
        losses.append(l.detach())
        step += 1
        if elapsed >= next_eval:
            next_eval += every
            emit({"name": name, "step": step, "minutes": round(elapsed / 60, 2), "lr": lr,
                  "train_loss": float(torch.stack(losses).mean()), **evaluate(model, x, y, False)})
            losses = []
    emit({"name": name, "final": True, "step": step, "base": base, "loss": loss, "tile": tile,
          "batch": batch, "lr": lr0, "params": sum(p.numel() for p in model.parameters()),
          **evaluate(model, x, y, False),
          "tta": evaluate(model, x, y, True)})


if __name__ == "__main__":
    main()
