"""From raw maps to displayable heatmaps and overlays (the NLM group's CRM display recipe).

Order, as their code: ReLU, divide by the maximum, upsample to the image (bilinear), cut below
`threshold` (20% of the maximum, paper B), 0..255. ReLU applies to every map: CRM and the
perturbation maps are non-negative already; for signed maps (CAM, integrated gradients) only the
evidence *for* the target class is shown. An all-non-positive map becomes all zeros.
Padded images (`valid` [H, W], 1 on the image, 0 on the padding up to pad_to): the maximum is taken
over the cells that hold image pixels only, and the upsampled heatmap is 0 on the padding.
Single-example functions except the elementwise `jet`, `jet_overlay`, `threshold`, `to_uint8`,
which take any leading batch axes.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from cervix_jax.models.parts import valid_fraction

Array = jax.Array

# matplotlib's "jet" (matplotlib/_cm.py _jet_data): (x, value) breakpoints per channel.
_JET = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}
_LUT_SIZE = 256
# The 256-entry lookup table matplotlib builds: entry i is the colour at i / 255.
JET_LUT = np.stack([np.interp(np.arange(_LUT_SIZE) / (_LUT_SIZE - 1), *zip(*_JET[c]))
                    for c in ("red", "green", "blue")], axis=-1).astype(np.float32)

_RESIZE = {"bilinear": "linear", "nearest": "nearest"}


def normalize(raw: Array, keep: Optional[Array] = None) -> Array:
    """ReLU(raw) / max(ReLU(raw)), any shape; zeros if the map has no positive value. With `keep`
    (bool, raw's shape) only those entries count, the others become 0."""
    r = jax.nn.relu(raw)
    if keep is not None:
        r = jnp.where(keep, r, 0.0)
    top = r.max()
    return jnp.where(top > 0, r / jnp.where(top > 0, top, 1.0), 0.0)


def upsample(heat: Array, shape: tuple[int, int], method: str = "bilinear") -> Array:
    """Resizes one map [h, w] to `shape` = (H, W): "bilinear" (half-pixel centres, edges clamped,
    as cv2.INTER_LINEAR and PIL) or "nearest" (source index floor((i + 0.5) * h / H))."""
    if method not in _RESIZE:
        raise ValueError(f"upsample: method must be one of {sorted(_RESIZE)}, found {method!r}")
    if heat.ndim != 2:
        raise ValueError(f"upsample: expected one map [h, w], found shape {tuple(heat.shape)}")
    return jax.image.resize(heat, tuple(shape), method=_RESIZE[method])


def heatmap(raw: Array, shape: tuple[int, int], method: str = "bilinear",
            valid: Optional[Array] = None) -> Array:
    """One raw map [h, w] -> [H, W] in [0, 1]: ReLU, / max, upsample (not yet thresholded).

    valid [H, W] (a padded image): cells of the map with no image pixel (`valid_fraction` 0) are
    zeroed before the max, and the result is 0 where valid is 0."""
    if valid is None:
        return upsample(normalize(raw), shape, method)
    if tuple(valid.shape) != tuple(shape):
        raise ValueError(f"heatmap: expected valid of the output shape {tuple(shape)}, found "
                         f"{tuple(valid.shape)}")
    keep = valid_fraction(valid, raw.shape) > 0
    return jnp.where(valid > 0, upsample(normalize(raw, keep), shape, method), 0.0)


def threshold(heat01: Array, threshold: float = 0.2) -> Array:
    """Zeros the values below `threshold` (a fraction of the maximum, for max-normalised maps)."""
    return jnp.where(heat01 >= threshold, heat01, 0.0)


def to_uint8(heat01: Array) -> Array:
    """[0, 1] -> uint8 0..255 (rounded, clipped)."""
    return jnp.round(jnp.clip(heat01, 0.0, 1.0) * 255).astype(jnp.uint8)


def jet(heat01: Array) -> Array:
    """matplotlib's 'jet' colormap, RGB order: [...] in [0, 1] -> [..., 3] float in [0, 1].

    Same lookup as `matplotlib.colormaps["jet"](x)[..., :3]`: entry min(floor(256 x), 255).
    """
    index = jnp.clip(jnp.floor(heat01 * _LUT_SIZE), 0, _LUT_SIZE - 1).astype(jnp.int32)
    return jnp.asarray(JET_LUT)[index]


def jet_overlay(image_uint8: Array, heat01: Array, alpha: float = 0.4,
                threshold: float = 0.2) -> Array:
    """JET overlay, batched: image [..., H, W, 3] uint8 RGB, heat [..., H, W] in [0, 1] -> uint8.

    Where heat >= threshold: round((1 - alpha) * image + alpha * 255 * jet(heat)); elsewhere the
    image unchanged (so the cut is visible).
    """
    if image_uint8.shape[:-1] != heat01.shape or image_uint8.shape[-1] != 3:
        raise ValueError(f"jet_overlay: expected image [..., H, W, 3] and heat [..., H, W], found "
                         f"{tuple(image_uint8.shape)} and {tuple(heat01.shape)}")
    image = image_uint8.astype(jnp.float32)
    blend = (1 - alpha) * image + alpha * 255.0 * jet(heat01)
    out = jnp.where((heat01 >= threshold)[..., None], blend, image)
    return jnp.round(jnp.clip(out, 0, 255)).astype(jnp.uint8)
