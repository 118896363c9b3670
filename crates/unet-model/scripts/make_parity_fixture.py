#!/usr/bin/env python3
"""Writes the PyTorch parity fixtures for unet-model's tests.

An independent PyTorch implementation of the same U-Net layout (names, concatenation order
[skip, up], centre crop with offsets rounded down, one BatchNorm per conv, 2x2 stride-2
ConvTranspose2d or nn.Upsample(bilinear) + 1x1 conv) is run in float64 on float32-rounded
weights; weights, input and outputs are saved as safetensors under tests/fixtures/:

    parity_<case>.safetensors   model tensors by our names, plus
                                fixture.input, fixture.output_eval,
                                fixture.output_train (BN cases), after_train.<bn>.running_{mean,var}
    parity_cases.json           each case's config (our UNetConfig JSON) and shapes
    param_counts.json           PyTorch's trainable-parameter counts of the presets

Usage: pip install torch safetensors numpy; python3 scripts/make_parity_fixture.py
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")


class Block(nn.Module):
    """Two 3x3 convs, each with its own BatchNorm (optional) and ReLU."""

    def __init__(self, c_in, c_out, pad, bn):
        super().__init__()
        self.conv0 = nn.Conv2d(c_in, c_out, 3, padding=pad)
        self.conv1 = nn.Conv2d(c_out, c_out, 3, padding=pad)
        self.use_bn = bn
        if bn:
            self.bn0 = nn.BatchNorm2d(c_out)
            self.bn1 = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = self.conv0(x)
        if self.use_bn:
            x = self.bn0(x)
        x = F.relu(x)
        x = self.conv1(x)
        if self.use_bn:
            x = self.bn1(x)
        return F.relu(x)


class Up(nn.Module):
    def __init__(self, wide, narrow, pad, bn, upsampling):
        super().__init__()
        if upsampling == "transposed":
            self.upconv = nn.ConvTranspose2d(wide, narrow, 2, stride=2)
            self.resize = None
        else:
            align = upsampling["bilinear"]["align_corners"]
            self.resize = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=align)
            self.upconv = nn.Conv2d(wide, narrow, 1)
        self.conv0 = nn.Conv2d(2 * narrow, narrow, 3, padding=pad)
        self.conv1 = nn.Conv2d(narrow, narrow, 3, padding=pad)
        self.use_bn = bn
        if bn:
            self.bn0 = nn.BatchNorm2d(narrow)
            self.bn1 = nn.BatchNorm2d(narrow)

    def forward(self, x, skip):
        up = self.upconv(self.resize(x) if self.resize is not None else x)
        h, w = up.shape[2:]
        top = (skip.shape[2] - h) // 2
        left = (skip.shape[3] - w) // 2
        x = torch.cat([skip[:, :, top : top + h, left : left + w], up], dim=1)
        x = self.conv0(x)
        if self.use_bn:
            x = self.bn0(x)
        x = F.relu(x)
        x = self.conv1(x)
        if self.use_bn:
            x = self.bn1(x)
        return F.relu(x)


class UNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        pad = 0 if cfg["padding"] == "valid" else 1
        d, b, bn = cfg["depth"], cfg["base_width"], cfg["batch_norm"]
        self.depth = d
        self.dropout = cfg["dropout"]
        for level in range(d):
            c_in = cfg["in_channels"] if level == 0 else b << (level - 1)
            setattr(self, f"down{level}", Block(c_in, b << level, pad, bn))
        for level in range(d - 1):
            setattr(self, f"up{level}", Up(b << (level + 1), b << level, pad, bn, cfg["upsampling"]))
        self.classifier = nn.Conv2d(b, cfg["n_classes"], 1)

    def forward(self, x):
        skips = []
        for level in range(self.depth):
            x = getattr(self, f"down{level}")(x)
            if level + 1 < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        x = F.dropout(x, self.dropout, self.training)
        for level in reversed(range(self.depth - 1)):
            x = getattr(self, f"up{level}")(x, skips[level])
        return self.classifier(x)


def preset(name):
    paper = dict(in_channels=1, n_classes=2, depth=5, base_width=64, padding="valid",
                 batch_norm=False, dropout=0.5, upsampling="transposed")
    if name == "paper":
        return paper
    if name == "reference":
        return {**paper, "batch_norm": True, "dropout": 0.0}
    if name == "small":
        return {**paper, "base_width": 16, "padding": "same", "batch_norm": True, "dropout": 0.0}
    raise ValueError(name)


def trainable_count(model):
    return sum(p.numel() for p in model.parameters())


def randomise(model, gen):
    """Non-trivial values everywhere (biases, BN affine and running stats), rounded to f32."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen, dtype=torch.float64))
            elif name.endswith("running_mean"):
                t.copy_(0.2 * torch.randn(t.shape, generator=gen, dtype=torch.float64))
            elif name.endswith("weight") and t.dim() == 1:  # BN scale
                t.copy_(0.8 + 0.4 * torch.rand(t.shape, generator=gen, dtype=torch.float64))
            elif t.dim() == 4:  # conv kernels: He normal
                fan_in = t.shape[0] if ".upconv." in name and t.shape[2] == 2 else t[0].numel()
                t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64) * (2.0 / fan_in) ** 0.5)
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=gen, dtype=torch.float64))
            t.copy_(t.float().double())


def state_f32(model):
    return {k: v.detach().float().contiguous() for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


CASES = {
    # name: (config, input shape)
    "valid_bn_transposed": (dict(in_channels=1, n_classes=2, depth=3, base_width=4, padding="valid",
                                 batch_norm=True, dropout=0.0, upsampling="transposed"), (2, 1, 48, 52)),
    "same_bn_transposed": (dict(in_channels=1, n_classes=2, depth=3, base_width=4, padding="same",
                                batch_norm=True, dropout=0.0, upsampling="transposed"), (2, 1, 16, 24)),
    "same_bn_bilinear": (dict(in_channels=1, n_classes=2, depth=3, base_width=4, padding="same",
                              batch_norm=True, dropout=0.0,
                              upsampling={"bilinear": {"align_corners": False}}), (2, 1, 16, 24)),
    "valid_bilinear_aligned_3class": (dict(in_channels=2, n_classes=3, depth=3, base_width=4,
                                           padding="valid", batch_norm=False, dropout=0.0,
                                           upsampling={"bilinear": {"align_corners": True}}),
                                      (1, 2, 48, 52)),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    gen = torch.Generator().manual_seed(20150518)
    cases = {}
    for name, (cfg, shape) in CASES.items():
        model = UNet(cfg).double()
        randomise(model, gen)
        x = torch.randn(shape, generator=gen, dtype=torch.float64).float().double()
        tensors = state_f32(model)
        model.eval()
        with torch.no_grad():
            tensors["fixture.input"] = x.float()
            tensors["fixture.output_eval"] = model(x).float()
        if cfg["batch_norm"]:
            model.train()
            with torch.no_grad():
                tensors["fixture.output_train"] = model(x).float()
            for k, v in model.state_dict().items():
                if "running" in k:
                    tensors[f"after_train.{k}"] = v.float()
        save_file(tensors, os.path.join(OUT, f"parity_{name}.safetensors"))
        cases[name] = {"config": cfg, "input": list(shape),
                       "output": list(tensors["fixture.output_eval"].shape),
                       "parameters": trainable_count(model)}
    with open(os.path.join(OUT, "parity_cases.json"), "w") as f:
        json.dump(cases, f, indent=2)
        f.write("\n")
    counts = {}
    for name in ["paper", "reference", "small"]:
        with torch.device("meta"):
            counts[name] = trainable_count(UNet(preset(name)))
    with open(os.path.join(OUT, "param_counts.json"), "w") as f:
        json.dump({"torch": torch.__version__, "n_classes": 2, "in_channels": 1, "counts": counts}, f, indent=2)
        f.write("\n")
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
