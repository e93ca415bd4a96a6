"""Feature pyramid (P3..P7) on top of a ResNet, as keras-retinanet and torchvision build it.

keras-retinanet (`__create_pyramid_features`), all convs 256 wide with bias:
  P5 = conv3x3(C5_reduced = conv1x1(C5))
  P4 = conv3x3(P4_merged = C4_reduced + up(C5_reduced))
  P3 = conv3x3(P3_merged = C3_reduced + up(P4_merged))
  P6 = conv3x3/2(C5)           (torchvision v1: conv3x3/2(P5); v2: conv3x3/2(C5))
  P7 = conv3x3/2(relu(P6))
`up` is nearest upsampling with source index floor(i * in / out) (TF1 `resize_images`, torch
`F.interpolate(mode="nearest")`), see `upsample_nearest_legacy`. The stride-2 convs pad 'SAME'
(asymmetric on even sizes) in keras-retinanet and (1, 1) in torchvision; the stride-1 3x3 convs pad
(1, 1) in both.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import chex
import flax.linen as nn
import jax.numpy as jnp

from cervix_jax.models import resnet

FPN_PADDINGS = ("same", "symmetric")
P6_SOURCES = ("C5", "P5")


def legacy_nearest_index(n_in: int, n_out: int):
    """Source index of every output position: floor(i * n_in / n_out), i = 0..n_out-1 (int32 [n_out])."""
    return (jnp.arange(n_out, dtype=jnp.int32) * n_in) // n_out


def upsample_nearest_legacy(x, out_hw: tuple[int, int]):
    """x [..., h, w, C] -> [..., H, W, C], out[i, j] = x[floor(i*h/H), floor(j*w/W)]."""
    chex.assert_rank(x, {3, 4})
    h, w = x.shape[-3], x.shape[-2]
    x = jnp.take(x, legacy_nearest_index(h, out_hw[0]), axis=-3)
    return jnp.take(x, legacy_nearest_index(w, out_hw[1]), axis=-2)


class FPN(nn.Module):
    """{"C3","C4","C5"} -> {"P3".."P7"}, `feature_size` channels each."""

    feature_size: int = 256
    padding: str = "same"           # stride-2 convs (P6, P7): "same" (keras) | "symmetric" (torch)
    p6_from: str = "C5"             # "C5" (keras-retinanet, torchvision v2) | "P5" (torchvision v1)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, c: dict):
        if self.padding not in FPN_PADDINGS:
            raise ValueError(f"FPN.padding: expected one of {FPN_PADDINGS}, found {self.padding!r}")
        if self.p6_from not in P6_SOURCES:
            raise ValueError(f"FPN.p6_from: expected one of {P6_SOURCES}, found {self.p6_from!r}")
        conv = functools.partial(nn.Conv, self.feature_size, dtype=self.dtype)
        pad1 = ((1, 1), (1, 1))
        s2pad = "SAME" if self.padding == "same" else pad1
        c3, c4, c5 = c["C3"], c["C4"], c["C5"]
        c5_reduced = conv((1, 1), padding="VALID", name="C5_reduced")(c5)
        p5 = conv((3, 3), padding=pad1, name="P5")(c5_reduced)
        p4_merged = conv((1, 1), padding="VALID", name="C4_reduced")(c4) + \
            upsample_nearest_legacy(c5_reduced, c4.shape[1:3])
        p4 = conv((3, 3), padding=pad1, name="P4")(p4_merged)
        p3_merged = conv((1, 1), padding="VALID", name="C3_reduced")(c3) + \
            upsample_nearest_legacy(p4_merged, c3.shape[1:3])
        p3 = conv((3, 3), padding=pad1, name="P3")(p3_merged)
        p6 = conv((3, 3), (2, 2), padding=s2pad, name="P6")(c5 if self.p6_from == "C5" else p5)
        p7 = conv((3, 3), (2, 2), padding=s2pad, name="P7")(nn.relu(p6))
        return {"P3": p3, "P4": p4, "P5": p5, "P6": p6, "P7": p7}


def build_pyramid(m, images, train: bool) -> dict:
    """Inside the compact `__call__` of a ResNetFPN (or subclass) `m`: its submodules "backbone" (ResNet)
    and "fpn", applied to `images` -> {"C2".."C5", "P3".."P7"}."""
    c = resnet.ResNet(m.stage_sizes, m.width, m.style, m.stem, m.bn_eps, m.conv_bias, m.dtype,
                      m.bn_axis_name, name="backbone")(images, train=train)
    p = FPN(m.feature_size, "same" if m.style == "caffe" else "symmetric", m.p6_from, m.dtype, name="fpn")(c)
    return {**c, **p}


class ResNetFPN(nn.Module):
    """RetinaNet's backbone + FPN: images [N, H, W, 3] -> {"C2".."C5", "P3".."P7"}.

    Variables: {"params": {"backbone": ..., "fpn": ...}, "batch_stats": {"backbone": ...}}.
    `train=True` trains BatchNorm (see resnet.ResNet).
    """

    stage_sizes: Sequence[int] = (3, 4, 6, 3)
    width: int = 64
    style: str = "caffe"
    stem: str = "same"
    bn_eps: float = 1e-5
    conv_bias: bool = False
    feature_size: int = 256
    p6_from: str = "C5"
    dtype: Any = jnp.float32
    bn_axis_name: Optional[str] = None

    @nn.compact
    def __call__(self, images, train: bool = False):
        return build_pyramid(self, images, train)


ResNet50FPN = functools.partial(ResNetFPN, stage_sizes=(3, 4, 6, 3), width=64, feature_size=256)
# Test-only (see resnet._ResNetTiny): P levels have 8 channels.
_ResNetTinyFPN = functools.partial(ResNetFPN, stage_sizes=(1, 1, 1, 1), width=4, feature_size=8)
