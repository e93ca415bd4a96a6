"""PyTorch peers of benchmarks/suite.py, run in their own process (never beside JAX).

    python benchmarks/torch_peers.py retinanet --batch 16 --hw 800x1200 --reps 10   # GPU, bf16 autocast
    python benchmarks/torch_peers.py captum HEAD.npz 150                            # CPU

Prints one JSON line. retinanet: torchvision's `retinanet_resnet50_fpn(weights=None,
weights_backbone=None, num_classes=2)` training step (forward with losses, backward, Adam) under
`torch.autocast("cuda", torch.bfloat16)`, images of the given size with one box each, the model's own
transform told to keep that size (min_size = H, max_size = W); images/s, ms (median), peak bytes.
captum: FeatureAblation of a GAP + dense + softmax head (the suite's CRM peer), per ablation time
extrapolated to the whole map.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def retinanet(batch: int, hw: str, reps: int) -> dict:
    import torch
    import torchvision
    from torchvision.models.detection import retinanet_resnet50_fpn

    if not torch.cuda.is_available():
        raise SystemExit("torchvision peer: no CUDA device")
    h, w = map(int, hw.split("x"))
    dev = torch.device("cuda")
    model = (
        retinanet_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=2, min_size=min(h, w), max_size=max(h, w)
        )
        .to(dev)
        .train()
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    g = torch.Generator(device="cpu").manual_seed(0)
    images = [torch.rand(3, h, w, generator=g).to(dev) for _ in range(batch)]
    targets = [
        {
            "boxes": torch.tensor([[w * 0.2, h * 0.2, w * 0.6, h * 0.7]], device=dev),
            "labels": torch.tensor([1], device=dev),
        }
        for _ in range(batch)
    ]

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses = model(images, targets)
            loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(max(reps, 1)):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    ms = statistics.median(times)
    return {
        "images_per_s": batch / ms * 1e3,
        "ms": ms,
        "peak_bytes": int(torch.cuda.max_memory_allocated()),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }


CAPTUM = """FeatureAblation of softmax(dense(mean_hw F)) with baseline 0, forward = -sum (s - s0)^2."""


def captum(path: str, subset: int) -> dict:
    import numpy as np
    import torch
    from captum.attr import FeatureAblation

    d = np.load(path)
    f = torch.from_numpy(d["features"]).permute(2, 0, 1)[None]  # [1, K, H, W]
    lin = torch.nn.Linear(f.shape[1], 2)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(d["kernel"].T))
        lin.bias.copy_(torch.from_numpy(d["bias"]))

    def head(x):
        return torch.softmax(lin(x.mean((2, 3))), -1)

    with torch.no_grad():
        s0 = head(f)
    h, w = f.shape[2:]
    mask = torch.full((1, 1, h, w), subset, dtype=torch.long)  # the other locations: one group
    mask.view(-1)[:subset] = torch.arange(subset)
    best = None
    for ppe in (1, 16):
        fa = FeatureAblation(lambda x: -((head(x) - s0) ** 2).sum(-1))
        t = time.perf_counter()
        with torch.no_grad():
            fa.attribute(f, baselines=0.0, feature_mask=mask, perturbations_per_eval=ppe)
        seconds = (time.perf_counter() - t) / (subset + 1) * h * w
        best = seconds if best is None else min(best, seconds)
    return {
        "ms": best * 1e3,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "note": f"{subset + 1} ablations timed, extrapolated to {h * w}",
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("retinanet")
    r.add_argument("--batch", type=int, default=16)
    r.add_argument("--hw", default="800x1200")
    r.add_argument("--reps", type=int, default=10)
    c = sub.add_parser("captum")
    c.add_argument("path")
    c.add_argument("subset", type=int)
    a = p.parse_args(argv)
    out = retinanet(a.batch, a.hw, a.reps) if a.what == "retinanet" else captum(a.path, a.subset)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
