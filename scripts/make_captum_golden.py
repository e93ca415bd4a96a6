"""Writes tests/golden/captum_occlusion.npz: Captum `Occlusion` attributions of a small seeded model.

Needs torch + captum (never in CI; the test rebuilds the model in JAX from the saved arrays):
    python3 -m venv /tmp/tv214 && /tmp/tv214/bin/pip install numpy torch==2.14.1 captum
    /tmp/tv214/bin/python scripts/make_captum_golden.py

The model (per case, arrays drawn from `np.random.default_rng([SEED, case number])`), on one image
x [H, W, 3] (NHWC, as cervix_jax; Captum sees NCHW):
    u[h, w]   = tanh(x[h, w] @ A + a) @ Wd                      [H, W, C]
    logits    = sum_hw M[h, w] * u[h, w] / (H * W) + b          [C]
    scores    = softmax(logits)
Captum: `Occlusion(forward).attribute(x, sliding_window_shapes=(3, window, window),
strides=(3, stride, stride), baselines=value, target=target)` in float64; channel 0 of the
attribution is saved (every channel is equal: the window covers all channels).
Saved per case `<name>/<key>`: x, A, a, Wd, b, M, attribution, and int/float scalars window, stride,
value, target; plus `versions` (JSON: torch, captum, numpy).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

SEED = 15
# (name, H, W, window, stride, value, target): the first two do not tile the image exactly (the
# windows stop before the far border), the third does.
CASES = (
    ("h21w30_win6_s4", 21, 30, 6, 4, 0.0, 1),
    ("h16w16_win5_s3", 16, 16, 5, 3, 0.5, 0),
    ("h16w24_win8_s8", 16, 24, 8, 8, 0.0, 2),
)
K, C = 5, 3


def case_arrays(number: int, h: int, w: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([SEED, number])
    return {"x": rng.uniform(0.0, 1.0, (h, w, 3)), "A": rng.normal(0.0, 1.5, (3, K)),
            "a": rng.normal(0.0, 0.5, K), "Wd": rng.normal(0.0, 2.0, (K, C)),
            "b": rng.normal(0.0, 0.3, C), "M": rng.uniform(-1.0, 3.0, (h, w))}


def main(out_path: str) -> None:
    import captum
    import torch
    from captum.attr import Occlusion

    out = {}
    for number, (name, h, w, window, stride, value, target) in enumerate(CASES):
        arr = {k: v.astype(np.float32) for k, v in case_arrays(number, h, w).items()}   # as saved
        t = {k: torch.tensor(v, dtype=torch.float64) for k, v in arr.items()}

        def forward(x_nchw):
            x = x_nchw.permute(0, 2, 3, 1)                                   # NHWC
            u = torch.tanh(x @ t["A"] + t["a"]) @ t["Wd"]                    # [N, H, W, C]
            logits = (u * t["M"][None, :, :, None]).sum((1, 2)) / (h * w) + t["b"]
            return torch.softmax(logits, -1)

        x = t["x"].permute(2, 0, 1)[None]                                    # [1, 3, H, W]
        attribution = Occlusion(forward).attribute(
            x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
            baselines=value, target=target, perturbations_per_eval=32)[0].numpy()
        if not np.allclose(attribution, attribution[:1], rtol=0, atol=0):
            raise AssertionError(f"{name}: channels differ")
        for k, v in arr.items():
            out[f"{name}/{k}"] = v
        out[f"{name}/attribution"] = attribution[0]
        out.update({f"{name}/window": np.int64(window), f"{name}/stride": np.int64(stride),
                    f"{name}/value": np.float64(value), f"{name}/target": np.int64(target)})
        zero_rows, zero_cols = (attribution[0] == 0).all(1).sum(), (attribution[0] == 0).all(0).sum()
        print(f"{name}: |attribution| max {np.abs(attribution).max():.4g}, uncovered rows {zero_rows}, "
              f"columns {zero_cols}")
    out["versions"] = np.array(json.dumps({"torch": torch.__version__, "captum": captum.__version__,
                                           "numpy": np.__version__, "seed": SEED}))
    np.savez_compressed(out_path, **out)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden",
                           "captum_occlusion.npz")
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(default))
