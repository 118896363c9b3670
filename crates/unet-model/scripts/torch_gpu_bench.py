#!/usr/bin/env python3
"""PyTorch on a CUDA GPU for the same steps as `unet bench ... --device cuda`: the nets, loss and
optimizer of xtask/scripts/torch_unet.py (the CPU reference), with cuDNN autotuning, timed
after three warm-up steps with the device synchronised (docs/RESULTS.md, "On a GPU").

usage: torch_gpu_bench.py train|fwd big|small BATCH SIZE STEPS [bf16]
  big = the paper's net (valid, 64..1024), small = base 16, same padding;
  bf16 = torch.autocast to bfloat16 (the loss in f32).
Set TORCH_UNET_DIR to the folder holding torch_unet.py if it is not the checkout's xtask/scripts.
Prints one JSON line.
"""
import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("TORCH_UNET_DIR",
                                  os.path.join(HERE, "..", "..", "..", "xtask", "scripts")))
from torch_unet import CFG, UNet, wce  # noqa: E402


def main():
    mode, which = sys.argv[1], sys.argv[2]
    batch, size, steps = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    amp = len(sys.argv) > 6 and sys.argv[6] == "bf16"
    torch.backends.cudnn.benchmark = True
    cfg = CFG[which]
    model = UNet(cfg["filters"], cfg["pad"]).cuda()
    x = torch.randn(batch, 1, size, size, device="cuda")
    with torch.no_grad():
        out = model.eval()(x).shape[2]
    target = torch.randint(0, 2, (batch, out, out), device="cuda")
    weight = torch.rand(batch, out, out, device="cuda") + 0.5
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            if mode == "train":
                model.train()
                opt.zero_grad(set_to_none=True)
                loss = wce(model(x).float(), target, weight)
                loss.backward()
                opt.step()
                loss.item()
            else:
                model.eval()
                with torch.no_grad():
                    model(x)
        torch.cuda.synchronize()

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    print(json.dumps(dict(fw="torch-cuda", mode=mode, model=which, batch=batch, size=size,
                          precision="bf16" if amp else "f32",
                          median_ms=statistics.median(times), min_ms=min(times))))


if __name__ == "__main__":
    main()
