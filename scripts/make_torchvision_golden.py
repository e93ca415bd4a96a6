"""Writes torchvision golden files into tests/golden/ (seeded weights, no downloads):

  torchvision_retinanet_{v1,v2}.npz   RetinaNet outputs: backbone and FPN levels, head outputs, anchors;
  torchvision_anchors.npz             anchors for odd image sizes (real feature maps of the v1 backbone)
                                      and `BoxCoder(weights=(1, 1, 1, 1)).decode_single` on random codes;
  torchvision_small.pth               a few recipe tensors saved by `torch.save` (a transposed view, a
                                      float16 and an int64 tensor among them) for the torch-free reader.

Needs torch + torchvision (never in CI; the test rebuilds the weights with NumPy alone):
    python3 -m venv /work/tv-venv && /work/tv-venv/bin/pip install numpy torch==2.14.1 torchvision==0.29.1
    /work/tv-venv/bin/python scripts/make_torchvision_golden.py

Recipe (RECIPE_VERSION 1), see `recipe_array`: every state-dict entry is drawn from
`np.random.default_rng([seed, zlib.crc32(key)])` with a key-dependent law, so that activations stay O(1)
and BatchNorm is not the identity. The input is `default_rng(seed).normal(size=(1, 64, 96, 3))` (NHWC).
v1 runs with BatchNorm eps 0.0 (as torchvision sets for its COCO v1 weights), v2 with eps 1e-5.
Models have NUM_CLASSES (3) classes. Saved (NHWC float32): input, C3..C5 (backbone.body), P3..P7
(backbone), `cls_logits` [1, A, 3] and `box_deltas` [1, A, 4] (`model.head`), `anchors` [A, 4]
(`model.anchor_generator`), and the state dict's keys and shapes (`sd_keys`, `sd_shapes`).
"""
from __future__ import annotations

import collections
import json
import os
import sys
import zlib

import numpy as np

RECIPE_VERSION = 1
NUM_CLASSES = 3
ANCHOR_SIZES = ((123, 157), (97, 211), (64, 96), (255, 321))
DECODE_COUNT = 500
SEED = 2024
INPUT_SHAPE = (1, 64, 96, 3)
BN_EPS = {"v1": 0.0, "v2": 1e-5}


def recipe_array(key: str, shape: tuple[int, ...], seed: int = SEED) -> np.ndarray:
    """The recipe's value for one state-dict entry (float32; int64 zeros for num_batches_tracked)."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    leaf = key.rsplit(".", 1)[-1]
    shape = tuple(shape)
    if leaf == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    if leaf == "running_var":
        x = rng.uniform(0.5, 2.0, shape)
    elif leaf == "running_mean":
        x = rng.normal(0.0, 0.2, shape)
    elif leaf == "bias":
        x = rng.normal(0.0, 0.1, shape)
    elif leaf == "weight" and len(shape) == 1:          # BatchNorm / GroupNorm scale
        x = rng.uniform(0.5, 1.0, shape)
    else:                                               # conv [O, I, kh, kw] / linear [O, I]
        fan_in = int(np.prod(shape[1:]))
        x = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
    return x.astype(np.float32)


def recipe_state_dict(keys, shapes, seed: int = SEED) -> dict[str, np.ndarray]:
    return {k: recipe_array(k, s, seed) for k, s in zip(keys, shapes)}


def recipe_input(seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=INPUT_SHAPE).astype(np.float32)


def main(out_dir: str) -> None:
    import torch
    import torchvision
    from torchvision.models import detection
    from torchvision.models.detection.image_list import ImageList

    torch.set_num_threads(2)
    builders = {"v1": detection.retinanet_resnet50_fpn, "v2": detection.retinanet_resnet50_fpn_v2}
    for version, build in builders.items():
        model = build(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).eval()
        sd = model.state_dict()
        keys = sorted(sd)
        shapes = [tuple(sd[k].shape) for k in keys]
        new = recipe_state_dict(keys, shapes)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in new.items()}, strict=True)
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torchvision.ops.misc.FrozenBatchNorm2d)):
                m.eps = BN_EPS[version]
        x = torch.from_numpy(recipe_input().transpose(0, 3, 1, 2))
        with torch.no_grad():
            c = model.backbone.body(x)
            p = model.backbone(x)
            head = model.head(list(p.values()))
            anchors = model.anchor_generator(ImageList(x, [tuple(x.shape[-2:])]), list(p.values()))[0]
        nhwc = lambda t: t.numpy().transpose(0, 2, 3, 1).astype(np.float32)
        out = {"C3": nhwc(c["0"]), "C4": nhwc(c["1"]), "C5": nhwc(c["2"]),
               "P3": nhwc(p["0"]), "P4": nhwc(p["1"]), "P5": nhwc(p["2"]), "P6": nhwc(p["p6"]),
               "P7": nhwc(p["p7"]), "cls_logits": head["cls_logits"].numpy(),
               "box_deltas": head["bbox_regression"].numpy(), "anchors": anchors.numpy()}
        path = os.path.join(out_dir, f"torchvision_retinanet_{version}.npz")
        np.savez_compressed(
            path, input=recipe_input(), sd_keys=np.array(keys), sd_shapes=json.dumps(shapes),
            recipe_version=RECIPE_VERSION, seed=SEED, bn_eps=BN_EPS[version],
            versions=f"torch {torch.__version__}, torchvision {torchvision.__version__}", **out)
        print(path, {k: (v.shape, float(np.abs(v).max())) for k, v in out.items()})
        if version == "v1":
            write_anchors(model, out_dir)
            small = {k: torch.from_numpy(new[k]) for k in SMALL_KEYS}
            conv, var = "backbone.body.layer1.0.conv1.weight", "backbone.body.layer1.0.bn1.running_var"
            small[conv] = small[conv].transpose(0, 1)             # a non-contiguous view
            small[var] = small[var].half()
            small["backbone.body.layer1.0.bn1.num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
            torch.save(collections.OrderedDict(small), os.path.join(out_dir, "torchvision_small.pth"))


SMALL_KEYS = ("backbone.body.conv1.weight", "backbone.body.bn1.weight", "backbone.body.layer1.0.conv1.weight",
              "backbone.body.layer1.0.bn1.running_var", "head.classification_head.cls_logits.bias")


def write_anchors(model, out_dir: str) -> None:
    """Anchors for odd sizes through the real backbone, and BoxCoder decoding of random codes."""
    import torch
    from torchvision.models.detection import _utils as det_utils
    from torchvision.models.detection.image_list import ImageList

    rng = np.random.default_rng(SEED + 1)
    out = {}
    for h, w in ANCHOR_SIZES:
        x = torch.zeros((1, 3, h, w))
        with torch.no_grad():
            feats = list(model.backbone(x).values())
        out[f"anchors_{h}x{w}"] = model.anchor_generator(ImageList(x, [(h, w)]), feats)[0].numpy()
        out[f"features_{h}x{w}"] = np.array([f.shape[-2:] for f in feats])
    boxes = out["anchors_123x157"][rng.choice(len(out["anchors_123x157"]), DECODE_COUNT)]
    codes = rng.normal(0, 1, (DECODE_COUNT, 4)).astype(np.float32)
    codes[:50, 2:] = rng.uniform(4.0, 8.0, (50, 2))           # above the clamp log(1000 / 16)
    coder = det_utils.BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
    out["decode_anchors"], out["decode_codes"] = boxes, codes
    out["decode_boxes"] = coder.decode_single(torch.from_numpy(codes), torch.from_numpy(boxes)).numpy()
    path = os.path.join(out_dir, "torchvision_anchors.npz")
    np.savez_compressed(path, sizes=np.array(ANCHOR_SIZES), **out)
    print(path, {k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else
         os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
