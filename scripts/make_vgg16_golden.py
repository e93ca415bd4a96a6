"""Writes tests/golden/torchvision_vgg16.npz: torchvision `vgg16` outputs on seeded weights.

Needs torch + torchvision (never in CI; the test rebuilds the 138M weights with NumPy alone, so the
528 MB state dict is never committed):
    python3 -m venv /tmp/tv214 && /tmp/tv214/bin/pip install numpy torch==2.14.1 torchvision==0.29.1
    /tmp/tv214/bin/python scripts/make_vgg16_golden.py

Recipe (RECIPE_VERSION 1), see `recipe_array`: every state-dict entry is drawn as float32 from
`np.random.default_rng([seed, zlib.crc32(key)]).standard_normal`, scaled by sqrt(2 / fan_in) for
weights (He: activations stay O(1) through 13 ReLU convs) and by 0.01 for biases. The input is
`default_rng(seed).normal(size=(1, 64, 64, 3))` (NHWC): 64 px gives a 2 x 2 map before
AdaptiveAvgPool2d(7), so the pool's overlapping bins are checked too. Saved: input, features (the
last conv block before the final max-pool, NHWC), logits [1, 1000], the state dict's keys and shapes.
"""
from __future__ import annotations

import json
import os
import sys
import zlib

import numpy as np

RECIPE_VERSION = 1
SEED = 1313
INPUT_SHAPE = (1, 64, 64, 3)


def recipe_array(key: str, shape: tuple[int, ...], seed: int = SEED) -> np.ndarray:
    """The recipe's float32 value for one state-dict entry."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    x = rng.standard_normal(tuple(shape), dtype=np.float32)
    if key.endswith(".bias"):
        return x * np.float32(0.01)
    return x * np.float32(np.sqrt(2.0 / int(np.prod(shape[1:]))))


def recipe_state_dict(keys, shapes, seed: int = SEED) -> dict[str, np.ndarray]:
    return {k: recipe_array(k, s, seed) for k, s in zip(keys, shapes)}


def recipe_input(seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=INPUT_SHAPE).astype(np.float32)


def main(out_dir: str) -> None:
    import torch
    import torchvision

    torch.set_num_threads(2)
    model = torchvision.models.vgg16(weights=None).eval()
    sd = model.state_dict()
    keys = sorted(sd)
    shapes = [tuple(sd[k].shape) for k in keys]
    model.load_state_dict({k: torch.from_numpy(v) for k, v in recipe_state_dict(keys, shapes).items()},
                          strict=True)
    x = torch.from_numpy(recipe_input().transpose(0, 3, 1, 2))
    with torch.no_grad():
        features = model.features[:-1](x)                 # before the last max-pool
        logits = model(x)
    path = os.path.join(out_dir, "torchvision_vgg16.npz")
    np.savez_compressed(
        path, input=recipe_input(), features=features.numpy().transpose(0, 2, 3, 1).astype(np.float32),
        logits=logits.numpy().astype(np.float32), sd_keys=np.array(keys), sd_shapes=json.dumps(shapes),
        recipe_version=RECIPE_VERSION, seed=SEED,
        versions=f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    print(path, features.shape, float(features.abs().max()), logits.shape, float(logits.abs().max()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else
         os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
