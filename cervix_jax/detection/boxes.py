"""Boxes (x1, y1, x2, y2), no +1 convention: IoU and the two RetinaNet box codings.

Everything here works on NumPy arrays (returning NumPy, for host code) and on JAX arrays (jit-friendly,
returning JAX). Zero-size and padded boxes give IoU 0 and finite codes, never NaN, also in gradients
(the double-`where` rule: the unsafe operand is replaced before the log/divide, then the result masked).

Box codings (`style`):
  "keras"        keras-retinanet `bbox_transform`: corner offsets over the anchor's size, / std 0.2:
                 d = ((gx1 - ax1) / aw, (gy1 - ay1) / ah, (gx2 - ax2) / aw, (gy2 - ay2) / ah) / 0.2.
  "torchvision"  torchvision `BoxCoder(weights=(1, 1, 1, 1))`: centre offsets and log size ratios,
                 d = ((gcx - acx) / aw, (gcy - acy) / ah, log(gw / aw), log(gh / ah)); decoding clamps
                 dw, dh at log(1000 / 16) before the exp.
`decode_boxes(a, encode_boxes(a, b)) == b` for boxes of positive size (and |log ratio| <= the clamp).
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

BOX_STYLES = ("keras", "torchvision")
KERAS_STD = 0.2
TORCHVISION_CLIP = math.log(1000.0 / 16)


def _xp(*arrays):
    return np if all(isinstance(a, (np.ndarray, np.generic)) for a in arrays) else jnp


def box_area(boxes):
    """[..., 4] -> [...]; negative extents count as 0."""
    xp = _xp(boxes)
    return xp.maximum(boxes[..., 2] - boxes[..., 0], 0) * xp.maximum(boxes[..., 3] - boxes[..., 1], 0)


def box_iou(a, b):
    """a [N, 4], b [M, 4] -> IoU [N, M]; 0 where the union is empty (zero-area boxes), never NaN."""
    xp = _xp(a, b)
    lt = xp.maximum(a[:, None, :2], b[None, :, :2])
    rb = xp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = xp.maximum(rb - lt, 0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    ok = union > 0
    return xp.where(ok, inter / xp.where(ok, union, 1), 0)


def _check_style(style: str) -> None:
    if style not in BOX_STYLES:
        raise ValueError(f"box coding: style expected one of {BOX_STYLES}, found {style!r}")


def encode_boxes(anchors, boxes, *, style: str = "keras"):
    """anchors [..., 4], boxes [..., 4] (broadcasting) -> regression targets [..., 4].

    torchvision style: a box of zero width/height gets dw/dh = 0 (finite; it is never a real target).
    """
    _check_style(style)
    xp = _xp(anchors, boxes)
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    if style == "keras":
        d = xp.stack([(boxes[..., 0] - anchors[..., 0]) / aw, (boxes[..., 1] - anchors[..., 1]) / ah,
                      (boxes[..., 2] - anchors[..., 2]) / aw, (boxes[..., 3] - anchors[..., 3]) / ah], -1)
        return d / KERAS_STD
    gw = boxes[..., 2] - boxes[..., 0]
    gh = boxes[..., 3] - boxes[..., 1]
    dx = (boxes[..., 0] + 0.5 * gw - (anchors[..., 0] + 0.5 * aw)) / aw
    dy = (boxes[..., 1] + 0.5 * gh - (anchors[..., 1] + 0.5 * ah)) / ah
    ok_w, ok_h = gw > 0, gh > 0
    dw = xp.where(ok_w, xp.log(xp.where(ok_w, gw, aw) / aw), 0)
    dh = xp.where(ok_h, xp.log(xp.where(ok_h, gh, ah) / ah), 0)
    return xp.stack([dx, dy, dw, dh], -1)


def decode_boxes(anchors, deltas, *, style: str = "keras"):
    """anchors [..., 4], deltas [..., 4] (broadcasting) -> boxes [..., 4]; inverse of `encode_boxes`."""
    _check_style(style)
    xp = _xp(anchors, deltas)
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    if style == "keras":
        d = deltas * KERAS_STD
        return xp.stack([anchors[..., 0] + d[..., 0] * aw, anchors[..., 1] + d[..., 1] * ah,
                         anchors[..., 2] + d[..., 2] * aw, anchors[..., 3] + d[..., 3] * ah], -1)
    cx = anchors[..., 0] + 0.5 * aw
    cy = anchors[..., 1] + 0.5 * ah
    dw = xp.minimum(deltas[..., 2], TORCHVISION_CLIP)
    dh = xp.minimum(deltas[..., 3], TORCHVISION_CLIP)
    px = deltas[..., 0] * aw + cx
    py = deltas[..., 1] * ah + cy
    half_w = 0.5 * (xp.exp(dw) * aw)
    half_h = 0.5 * (xp.exp(dh) * ah)
    return xp.stack([px - half_w, py - half_h, px + half_w, py + half_h], -1)


def clip_boxes(boxes, image_hw):
    """Clips [..., 4] boxes to [0, W] x [0, H]."""
    xp = _xp(boxes)
    h, w = image_hw
    hi = xp.asarray([w, h, w, h], dtype=boxes.dtype)
    return xp.clip(boxes, 0, hi)


def mask_to_box(mask):
    """Binary masks [..., H, W] -> (bounding boxes [..., 4] float32 (x1, y1, x2, y2), valid [...] bool).
    x2, y2 are one past the last pixel (a one-pixel mask has size 1); an empty mask gives (0, 0, 0, 0),
    valid False. NumPy in, NumPy out; JAX in, JAX out (jit-friendly)."""
    xp = _xp(mask)
    mask = mask > 0
    rows, cols = mask.any(axis=-1), mask.any(axis=-2)              # [..., H], [..., W]
    h, w = rows.shape[-1], cols.shape[-1]
    y1, x1 = xp.argmax(rows, axis=-1), xp.argmax(cols, axis=-1)
    y2, x2 = h - xp.argmax(rows[..., ::-1], axis=-1), w - xp.argmax(cols[..., ::-1], axis=-1)
    valid = rows.any(axis=-1)
    box = xp.stack([x1, y1, x2, y2], axis=-1).astype(xp.float32)
    return xp.where(valid[..., None], box, 0).astype(xp.float32), valid


__all__ = [
    "BOX_STYLES",
    "box_area",
    "box_iou",
    "clip_boxes",
    "decode_boxes",
    "encode_boxes",
    "mask_to_box",
]
