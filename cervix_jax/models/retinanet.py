"""RetinaNet: the ResNet-FPN of `fpn.py` plus the two detection subnets, as keras-retinanet and torchvision
build them.

Each subnet is `depth` x (conv3x3 `width` + ReLU) then a conv3x3 to A*K outputs (classification, K
classes) or A*4 (box regression), applied with the SAME weights to every level P3..P7. Initialisation as
both libraries: conv kernels N(0, 0.01), biases 0, the classification output's bias -log((1 - pi) / pi),
pi = prior_probability (0.01), so that every anchor starts at probability pi. `head_norm="group"` puts
GroupNorm(32) after each hidden conv (without conv bias): torchvision's `retinanet_resnet50_fpn_v2`.

Outputs, anchors in the order of `detection.anchors_for_shape` (level, y, x, anchor):
    {"C2".."C5", "P3".."P7", "cls_logits": [N, A_total, K], "box_deltas": [N, A_total, 4]}
Layer names follow keras-retinanet (`classification_submodel/pyramid_classification_{i}`, `.../
pyramid_classification`, `regression_submodel/pyramid_regression_{i}`, `.../pyramid_regression`), and
the backbone/FPN keep `ResNetFPN`'s tree, so the converters map every source onto one tree and
{"params": {"backbone", "fpn"}, "batch_stats"} of a trained RetinaNet is a `ResNetFPN` checkpoint.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cervix_jax.models import fpn

HEAD_NORMS = ("none", "group")
PYRAMID_LEVELS = ("P3", "P4", "P5", "P6", "P7")


class Subnet(nn.Module):
    """[N, h, w, C] per level -> [N, h * w * num_anchors, outputs_per_anchor] per level (shared weights)."""

    prefix: str                     # "pyramid_classification" | "pyramid_regression"
    num_anchors: int
    outputs_per_anchor: int
    width: int = 256
    depth: int = 4
    norm: str = "none"
    final_bias: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, levels: Sequence):
        if self.norm not in HEAD_NORMS:
            raise ValueError(f"RetinaNet head_norm: expected one of {HEAD_NORMS}, found {self.norm!r}")
        conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                                 kernel_init=nn.initializers.normal(0.01))
        hidden = [conv(self.width, use_bias=self.norm == "none", name=f"{self.prefix}_{i}")
                  for i in range(self.depth)]
        norms = [nn.GroupNorm(32, epsilon=1e-5, use_fast_variance=False, dtype=self.dtype,
                              name=f"{self.prefix}_{i}_norm") for i in range(self.depth)] \
            if self.norm == "group" else [None] * self.depth
        final = conv(self.num_anchors * self.outputs_per_anchor, name=self.prefix,
                     bias_init=nn.initializers.constant(self.final_bias))
        out = []
        for x in levels:
            for layer, norm in zip(hidden, norms):
                x = layer(x)
                x = nn.relu(norm(x) if norm is not None else x)
            y = final(x)
            out.append(y.reshape(y.shape[0], -1, self.outputs_per_anchor))
        return out


class RetinaNet(fpn.ResNetFPN):
    """images [N, H, W, 3] -> pyramid dict + "cls_logits" [N, A, K] + "box_deltas" [N, A, 4] (float32)."""

    num_classes: int = 2
    num_anchors: int = 9
    head_width: int = 256
    head_depth: int = 4
    head_norm: str = "none"
    prior_probability: float = 0.01

    @nn.compact
    def __call__(self, images, train: bool = False):
        out = fpn.build_pyramid(self, images, train)
        levels = [out[level] for level in PYRAMID_LEVELS]
        common = dict(num_anchors=self.num_anchors, width=self.head_width, depth=self.head_depth,
                      norm=self.head_norm, dtype=self.dtype)
        cls = Subnet("pyramid_classification", outputs_per_anchor=self.num_classes,
                     final_bias=-math.log((1 - self.prior_probability) / self.prior_probability),
                     name="classification_submodel", **common)(levels)
        box = Subnet("pyramid_regression", outputs_per_anchor=4, name="regression_submodel", **common)(levels)
        return {**out, "cls_logits": jnp.concatenate(cls, axis=1).astype(jnp.float32),
                "box_deltas": jnp.concatenate(box, axis=1).astype(jnp.float32)}


RetinaNet50 = functools.partial(RetinaNet, stage_sizes=(3, 4, 6, 3), width=64, feature_size=256)
# Test-only: the tiny backbone of fpn._ResNetTinyFPN with 8-wide, 1-deep heads.
_RetinaNetTiny = functools.partial(RetinaNet, stage_sizes=(1, 1, 1, 1), width=4, feature_size=8,
                                   head_width=8, head_depth=1)


def backbone_variables(variables: dict) -> dict:
    """RetinaNet variables -> the `ResNetFPN` variables ({"params": {"backbone", "fpn"}, "batch_stats"})."""
    return {"params": {k: variables["params"][k] for k in ("backbone", "fpn")},
            "batch_stats": variables["batch_stats"]}
