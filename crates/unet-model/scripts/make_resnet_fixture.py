"""Golden fixtures for the ResNet U-Net: `tests/fixtures/resnet.json`, read by `tests/resnet.rs`.

    pip install torch torchvision
    python3 crates/unet-model/scripts/make_resnet_fixture.py

1. Parameter counts of PyTorch's version of our ResNet U-Nets (torchvision's resnet18 /
   resnet34 without `fc`, its `conv1` for 1 input channel, our decoder: ConvTranspose2d 2x2
   stride 2, two 3x3 convs + BN + ReLU, widths 256..16, a 1x1 classifier).
2. The torchvision-name mapping of `--encoder-weights`: a torchvision resnet18 (3 channels) whose
   every tensor is filled by `value(name_index, element)` below (instead of 45 MB of random
   weights, the Rust test computes the same numbers), run in eval mode on `image()`; the output
   of `layer4` and of the stem are stored.
"""

import json
import math
import os

import torch
import torch.nn as nn
import torchvision

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "resnet.json")


def value(tensor_index, i, kind):
    """The deterministic fill, in float64, cast to float32 by the caller."""
    s = math.sin(0.37 * i + 1.3 * tensor_index)
    if kind == "weight":
        return 0.08 * s
    if kind == "running_var":
        return 1.0 + 0.5 * abs(s)
    return 0.1 * s  # BN scale offsets, shifts, running means


def kind_of(name):
    if name.endswith("running_var"):
        return "running_var"
    if name.endswith("running_mean") or name.endswith(".bias"):
        return "shift"
    if name.startswith("bn") or ".bn" in name or "downsample.1" in name:
        return "scale"  # BN weight: 1 + 0.1 s
    return "weight"


def fill(model):
    names = [n for n in model.state_dict() if not n.endswith("num_batches_tracked") and not n.startswith("fc.")]
    with torch.no_grad():
        sd = model.state_dict()
        for k, name in enumerate(names):
            t = sd[name]
            kind = kind_of(name)
            vals = [value(k, i, "weight" if kind == "weight" else kind) for i in range(t.numel())]
            v = torch.tensor(vals, dtype=torch.float64)
            if kind == "scale":
                v = 1.0 + v
            t.copy_(v.reshape(t.shape).float())
    return names


def image(c, h, w):
    return torch.tensor(
        [math.cos(0.11 * i) * 0.5 for i in range(c * h * w)], dtype=torch.float64
    ).reshape(1, c, h, w).float()


class DoubleConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResNetUNet(nn.Module):
    def __init__(self, arch, in_ch=1, n_cls=2, base=16):
        super().__init__()
        enc = getattr(torchvision.models, arch)(weights=None)
        if in_ch != 3:
            enc.conv1 = nn.Conv2d(in_ch, 64, 7, 2, 3, bias=False)
        enc.fc = nn.Identity()
        self.encoder = enc
        skips = [0, 64, 64, 128, 256]
        self.ups, self.convs = nn.ModuleList(), nn.ModuleList()
        c = 512
        for level in reversed(range(5)):
            w = base << level
            self.ups.append(nn.ConvTranspose2d(c, w, 2, stride=2))
            self.convs.append(DoubleConv(w + skips[level], w))
            c = w
        self.classifier = nn.Conv2d(base, n_cls, 1)

    def forward(self, x):
        e = self.encoder
        stem = e.relu(e.bn1(e.conv1(x)))
        maps = [None, stem]
        h = e.maxpool(stem)
        for layer in (e.layer1, e.layer2, e.layer3, e.layer4):
            h = layer(h)
            maps.append(h)
        h = maps.pop()
        for up, conv, level in zip(self.ups, self.convs, reversed(range(5))):
            h = up(h)
            if maps[level] is not None:
                h = torch.cat([maps[level], h], 1)
            h = conv(h)
        return self.classifier(h)


def main():
    counts = {}
    for arch in ("resnet18", "resnet34"):
        net = ResNetUNet(arch)
        counts[arch] = sum(p.numel() for p in net.parameters())
        assert net(torch.zeros(1, 1, 64, 64)).shape == (1, 2, 64, 64)

    enc = torchvision.models.resnet18(weights=None).eval()
    names = fill(enc)
    x = image(3, 64, 64)
    with torch.no_grad():
        stem = enc.relu(enc.bn1(enc.conv1(x)))
        h = enc.maxpool(stem)
        for layer in (enc.layer1, enc.layer2, enc.layer3, enc.layer4):
            h = layer(h)
    fixture = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "parameter_counts": counts,
        "resnet18_tensors": [[n, list(enc.state_dict()[n].shape)] for n in names],
        "input_shape": [1, 3, 64, 64],
        "stem_sum": float(stem.double().sum()),
        "stem_abs_sum": float(stem.double().abs().sum()),
        "layer4_shape": list(h.shape),
        "layer4": [round(v, 7) for v in h.flatten().tolist()],
    }
    with open(OUT, "w") as f:
        json.dump(fixture, f)
    print("wrote", OUT, counts, "layer4 mean", float(h.mean()))


if __name__ == "__main__":
    main()
