"""RetinaNet anchors (x1, y1, x2, y2 in pixels) for a fixed image size, as static NumPy constants.

Two styles, each equal to its library:
  "keras"        keras-retinanet (`utils/anchors.py`): levels P3..P7, sizes 32..512, strides 8..128,
                 ratios h/w 0.5, 1, 2 and scales 2^0, 2^(1/3), 2^(2/3); feature map sizes
                 ceil(side / stride); a position's centre at (i + 0.5) * stride; float boxes.
  "torchvision"  torchvision's `AnchorGenerator` as `retinanet_resnet50_fpn` builds it: sizes
                 (s, int(s 2^(1/3)), int(s 2^(2/3))) per level, base anchors rounded (float32), a
                 position's corner at i * stride with stride = image side // feature side (so odd
                 sizes give strides below 2^level).
Order in both: level-major (P3 first), then positions row-major (y, then x), then the 9 anchors of a
position, ratio-major (ratio 0.5 with its 3 scales first). This is the order of the heads' outputs
([N, h, w, A*K] reshaped to [N, h*w*A, K], levels concatenated).
"""
from __future__ import annotations

import numpy as np

LEVELS = (3, 4, 5, 6, 7)
SIZES = (32, 64, 128, 256, 512)
RATIOS = (0.5, 1.0, 2.0)
SCALES = (2.0 ** 0, 2.0 ** (1 / 3), 2.0 ** (2 / 3))
STYLES = ("keras", "torchvision")
NUM_ANCHORS = len(RATIOS) * len(SCALES)      # anchors per position


def feature_shapes(image_hw, levels=LEVELS) -> list[tuple[int, int]]:
    """Feature map (h, w) per level: ceil(side / 2^level) (what 'SAME' and torch's padded convs give)."""
    h, w = (int(s) for s in image_hw)
    return [(-(-h // 2 ** lv), -(-w // 2 ** lv)) for lv in levels]


def _keras_base(size: float, ratios, scales) -> np.ndarray:
    """[R*S, 4] anchors centred on 0: w = sqrt(area / ratio), h = w * ratio (keras `generate_anchors`)."""
    r = np.repeat(np.asarray(ratios, np.float64), len(scales))
    area = (size * np.tile(np.asarray(scales, np.float64), len(ratios))) ** 2
    w = np.sqrt(area / r)
    h = w * r
    return np.stack([-w / 2, -h / 2, w / 2, h / 2], axis=1)


def _torchvision_base(size: float, ratios, scales) -> np.ndarray:
    """[R*S, 4] rounded base anchors in float32 arithmetic (torchvision `generate_anchors`)."""
    sizes = np.asarray([int(size * s) for s in scales], np.float32)
    h_ratios = np.sqrt(np.asarray(ratios, np.float32))
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * sizes[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * sizes[None, :]).reshape(-1)
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2)).astype(np.float64)


def anchors_for_shape(image_hw, style: str = "keras", *, sizes=SIZES, ratios=RATIOS, scales=SCALES,
                      levels=LEVELS) -> np.ndarray:
    """All anchors [A, 4] (x1, y1, x2, y2, float64) for an image of size `image_hw` = (H, W).

    `sizes` are the base sizes per level (pass smaller ones for small images); A = sum over levels of
    h_l * w_l * len(ratios) * len(scales).
    """
    if style not in STYLES:
        raise ValueError(f"anchors_for_shape: style expected one of {STYLES}, found {style!r}")
    if len(sizes) != len(levels):
        raise ValueError(f"anchors_for_shape: {len(sizes)} sizes for {len(levels)} levels")
    h, w = (int(s) for s in image_hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"anchors_for_shape: image_hw must be positive, found {image_hw}")
    out = []
    for size, level, (fh, fw) in zip(sizes, levels, feature_shapes((h, w), levels)):
        if style == "keras":
            base = _keras_base(size, ratios, scales)
            sy = sx = 2.0 ** level
            ys, xs = (np.arange(fh) + 0.5) * sy, (np.arange(fw) + 0.5) * sx
        else:
            base = _torchvision_base(size, ratios, scales)
            sy, sx = h // fh, w // fw
            ys, xs = np.arange(fh, dtype=np.float64) * sy, np.arange(fw, dtype=np.float64) * sx
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        shifts = np.stack([xx.ravel(), yy.ravel(), xx.ravel(), yy.ravel()], axis=1)
        out.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
    return np.concatenate(out, axis=0)


def num_anchors(image_hw, levels=LEVELS, per_position: int = NUM_ANCHORS) -> int:
    """A for `anchors_for_shape(image_hw)` without building the array."""
    return sum(fh * fw for fh, fw in feature_shapes(image_hw, levels)) * per_position
