"""Quantitative evaluation of explanation maps. Single-example, jittable; batch with `jax.vmap`.

Maps here are on the image grid: `heat01` [H, W] as `postprocess.heatmap` returns it (max-normalised,
in [0, 1]); masks uint8/bool [H, W]. "Kept" pixels are heat01 >= threshold, the pixels
`postprocess.threshold` keeps. Every metric takes an optional `valid` [H, W] (1 on the image, 0 on
the padding of an image smaller than pad_to): the padding then counts nowhere (not in the ROI
area's denominator, never the pointing-game maximum, outside both IoU sets, never deleted or
inserted).
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _check_pair(heat, mask, where):
    if heat.ndim != 2 or heat.shape != mask.shape:
        raise ValueError(f"{where}: expected one map [H, W] and a mask of the same shape, found "
                         f"{tuple(heat.shape)} and {tuple(mask.shape)}")


def _valid(valid, heat, where):
    if valid is None:
        return jnp.ones(heat.shape, bool)
    _check_pair(heat, valid, where)
    return valid > 0


def roi_area(heat01: Array, threshold: float = 0.2, valid: Optional[Array] = None) -> Array:
    """ROI area ratio: fraction of the (valid) pixels with heat01 >= threshold."""
    v = _valid(valid, heat01, "roi_area")
    return jnp.sum((heat01 >= threshold) & v) / jnp.maximum(jnp.sum(v), 1)


def pointing_game(heat: Array, mask: Array, valid: Optional[Array] = None) -> Array:
    """1.0 if the map's maximum over the (valid) pixels (first in row-major order on ties) lies
    inside the mask, else 0.0."""
    _check_pair(heat, mask, "pointing_game")
    v = _valid(valid, heat, "pointing_game")
    top = jnp.argmax(jnp.where(v, heat, -jnp.inf).reshape(-1))
    return (mask.reshape(-1)[top] > 0).astype(jnp.float32)


def iou(heat01: Array, mask: Array, threshold: float = 0.2, valid: Optional[Array] = None) -> Array:
    """Intersection over union of {heat01 >= threshold} with {mask > 0} (both within the valid
    pixels); nan if both are empty."""
    _check_pair(heat01, mask, "iou")
    v = _valid(valid, heat01, "iou")
    a, b = (heat01 >= threshold) & v, (mask > 0) & v
    union = jnp.sum(a | b)
    return jnp.where(union > 0, jnp.sum(a & b) / jnp.maximum(union, 1), jnp.nan)


def blurred(image: Array, sigma: float = 5.0, valid: Optional[Array] = None) -> Array:
    """Gaussian blur of one image [H, W, C]: separable, radius int(3 sigma + 0.5), normalised
    taps, mirror borders (reflect-101); equals scipy.ndimage.gaussian_filter(mode="mirror",
    truncate=3.0) over H and W. The insertion baseline.

    valid [H, W] (a padded image): the blur of the image pixels alone, blur(x v) / blur(v) on the
    valid pixels (no padding mixed in), and the input itself on the padding."""
    if image.ndim != 3:
        raise ValueError(f"blurred: expected one image [H, W, C], found {tuple(image.shape)}")
    if valid is not None:
        _check_pair(image[..., 0], valid, "blurred")
        v = (valid > 0).astype(image.dtype)[..., None]
        num, den = blurred(image * v, sigma), blurred(v, sigma)
        return jnp.where(v > 0, num / jnp.maximum(den, 1e-12), image)
    radius = int(3 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = jnp.asarray(taps / taps.sum(), image.dtype)
    x = jnp.pad(image, ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    h, w, _ = image.shape
    x = sum(taps[i] * x[i:i + h] for i in range(2 * radius + 1))
    return sum(taps[i] * x[:, i:i + w] for i in range(2 * radius + 1))


def _curve(score_fn, start, end, heat, steps, batch_size, valid):
    h, w, _ = start.shape
    n = h * w
    if valid is None:
        order = jnp.argsort(-heat.reshape(-1), stable=True)
        counts = jnp.asarray(np.round(np.arange(steps + 1) * n / steps).astype(np.int32))
    else:   # valid pixels first (by decreasing heat), the padding last and never reached
        v = (valid > 0).reshape(-1)
        order = jnp.lexsort((-heat.reshape(-1), (~v).astype(jnp.int32)))
        n_valid = jnp.sum(v).astype(jnp.float32)
        counts = jnp.round(jnp.arange(steps + 1, dtype=jnp.float32) * n_valid / steps).astype(jnp.int32)
    rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32)).reshape(h, w, 1)

    def score(count):
        return score_fn(jnp.where(rank < count, end, start))

    if batch_size is None:
        curve = jax.vmap(score)(counts)
    else:
        curve = jax.lax.map(score, counts, batch_size=batch_size)
    auc = (jnp.sum(curve) - 0.5 * (curve[0] + curve[-1])) / steps   # trapezoid on [0, 1]
    return curve, auc


def deletion(score_fn: Callable[[Array], Array], image: Array, heat: Array, *,
             baseline: Optional[Array] = None, steps: int = 16,
             batch_size: Optional[int] = None, valid: Optional[Array] = None) -> tuple[Array, Array]:
    """Deletion curve and AUC (Petsiuk et al. 2018): pixels in decreasing order of `heat` are
    replaced by `baseline` (zeros unless given), round(k * H*W / steps) of them at step k = 0..steps;
    score_fn(image) -> scalar (the target class score). Returns (curve [steps + 1], trapezoid AUC).
    Lower is better. heat [H, W] on the image grid; the steps are vmapped (chunked by batch_size).
    valid [H, W]: only the n_valid image pixels are ordered and replaced, round(k * n_valid / steps)
    at step k; the padding stays as it is."""
    _check_pair(heat, image[..., 0], "deletion")
    end = jnp.zeros_like(image) if baseline is None else baseline
    return _curve(score_fn, image, end, heat, steps, batch_size, valid)


def insertion(score_fn: Callable[[Array], Array], image: Array, heat: Array, *,
              baseline: Optional[Array] = None, steps: int = 16,
              batch_size: Optional[int] = None, valid: Optional[Array] = None) -> tuple[Array, Array]:
    """Insertion curve and AUC: starts from `baseline` (default `blurred(image, valid=valid)`) and
    puts back the image's pixels in decreasing order of `heat`, as `deletion`. Higher is better."""
    _check_pair(heat, image[..., 0], "insertion")
    start = blurred(image, valid=valid) if baseline is None else baseline
    return _curve(score_fn, start, image, heat, steps, batch_size, valid)
