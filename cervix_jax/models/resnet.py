"""ResNet (v1 bottleneck) with frozen BatchNorm, in the two conventions RetinaNet weights come in.

Styles (`style`):
  "caffe"        keras-resnet / Keras applications: the stride sits on the first 1x1 conv (branch2a).
  "torchvision"  the stride sits on the 3x3 conv (branch2b), "ResNet v1.5".
Stems (`stem`):
  "same"         keras-resnet >= 0.2.0: conv1 7x7/2 'SAME', pool1 3x3/2 'SAME' (TF asymmetric padding).
  "pad3_same"    keras-resnet 0.1.0: ZeroPadding(3) + valid conv1, pool1 'SAME'.
  "symmetric"    torchvision and Keras applications: conv1 padded (3, 3), pool1 padded (1, 1) with -inf
                 (Keras applications pads pool1 with zeros after a ReLU: the same maximum).
Inside the blocks both styles pad the 3x3 conv by (1, 1) and the 1x1 convs by 0, which is what
'SAME'/ZeroPadding(1)+valid and torch's `padding=1` give there.

BatchNorm: `y = (x - mean) / sqrt(var + bn_eps) * scale + bias`. With `train=False` (the default: stage 2,
inference, converted weights) it uses the running statistics in `batch_stats`; with `train=True` (RetinaNet
stage 1, from scratch) it normalises by the batch statistics and updates the running ones (momentum 0.9,
`apply(..., mutable=["batch_stats"])`), averaged over the devices of `bn_axis_name` when the step runs
under pmap/shard_map with that axis.
Variables use keras-resnet's layer names (`conv1`, `bn_conv1`, `res2a/branch2a`, `res2a/bn_branch2a`, ...),
so that the converters map every source format onto one tree.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

STYLES = ("caffe", "torchvision")
STEMS = ("same", "pad3_same", "symmetric")


def block_name(stage: int, block: int) -> str:
    """keras-resnet's block name: stage 2..5, block 0.. -> 'res2a', 'res4f'."""
    return f"res{stage}{chr(ord('a') + block)}"


class Bottleneck(nn.Module):
    """Bottleneck block `res{S}{B}`: branch2a (1x1) -> branch2b (3x3) -> branch2c (1x1, 4x), + shortcut."""

    filters: int
    strides: int
    project: bool          # shortcut branch1 (1x1 conv + BN); block 'a' of every stage
    style: str
    conv: Any
    norm: Any

    @nn.compact
    def __call__(self, x):
        s_a, s_b = (self.strides, 1) if self.style == "caffe" else (1, self.strides)
        y = self.conv(self.filters, (1, 1), (s_a, s_a), padding="VALID", name="branch2a")(x)
        y = nn.relu(self.norm(name="bn_branch2a")(y))
        y = self.conv(self.filters, (3, 3), (s_b, s_b), padding=((1, 1), (1, 1)), name="branch2b")(y)
        y = nn.relu(self.norm(name="bn_branch2b")(y))
        y = self.conv(4 * self.filters, (1, 1), padding="VALID", name="branch2c")(y)
        y = self.norm(name="bn_branch2c")(y)
        if self.project:
            x = self.conv(4 * self.filters, (1, 1), (self.strides, self.strides), padding="VALID",
                          name="branch1")(x)
            x = self.norm(name="bn_branch1")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """images [N, H, W, 3] (preprocessed) -> {"C2": stride 4, "C3": 8, "C4": 16, "C5": 32}."""

    stage_sizes: Sequence[int]
    width: int = 64                 # filters of stage 2's bottleneck; stage k has width * 2**(k-2)
    style: str = "caffe"
    stem: str = "same"
    bn_eps: float = 1e-5
    conv_bias: bool = False         # Keras applications' ResNet50 has conv biases
    dtype: Any = jnp.float32        # compute dtype; parameters stay float32
    bn_axis_name: Optional[str] = None   # data-parallel axis for BatchNorm statistics when training

    @nn.compact
    def __call__(self, images, train: bool = False):
        if self.style not in STYLES:
            raise ValueError(f"ResNet.style: expected one of {STYLES}, found {self.style!r}")
        if self.stem not in STEMS:
            raise ValueError(f"ResNet.stem: expected one of {STEMS}, found {self.stem!r}")
        chex.assert_rank(images, 4)
        chex.assert_axis_dimension(images, 3, 3)
        conv = functools.partial(nn.Conv, use_bias=self.conv_bias, dtype=self.dtype)
        norm = functools.partial(nn.BatchNorm, use_running_average=not train, epsilon=self.bn_eps,
                                 momentum=0.9, axis_name=self.bn_axis_name if train else None,
                                 dtype=self.dtype)
        x = images.astype(self.dtype)
        conv1_pad = "SAME" if self.stem == "same" else ((3, 3), (3, 3))
        x = conv(self.width, (7, 7), (2, 2), padding=conv1_pad, name="conv1")(x)
        x = nn.relu(norm(name="bn_conv1")(x))
        pool1_pad = ((1, 1), (1, 1)) if self.stem == "symmetric" else "SAME"
        x = nn.max_pool(x, (3, 3), (2, 2), padding=pool1_pad)   # pads with -inf
        out = {}
        for i, blocks in enumerate(self.stage_sizes):
            stage = i + 2
            for b in range(blocks):
                x = Bottleneck(self.width * 2 ** i, strides=2 if (b == 0 and stage > 2) else 1,
                               project=b == 0, style=self.style, conv=conv, norm=norm,
                               name=block_name(stage, b))(x)
            out[f"C{stage}"] = x
        return out


ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3))
# Test-only: one block per stage, 4 filters (C5 has 32 channels); compiles in seconds.
_ResNetTiny = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), width=4)
