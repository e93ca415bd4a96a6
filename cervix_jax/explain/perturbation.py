"""Perturbation explainers: image-space occlusion, Score-CAM, Ablation-CAM (channel ablation).

Each perturbation is one function of an index, run in chunks of `batch_size` with `jax.lax.map`
(`batch_size=None`: all at once with `jax.vmap`), so the perturbed inputs of one chunk exist at a
time and no more. Defaults: 32 channels (Score-CAM, Ablation-CAM, as pytorch-grad-cam), 64 windows.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from cervix_jax.explain.cam import check_features

Array = jax.Array
_HIGHEST = jax.lax.Precision.HIGHEST


def _map(fn, xs, batch_size):
    return jax.vmap(fn)(xs) if batch_size is None else jax.lax.map(fn, xs, batch_size=batch_size)


def _check_image(image, where):
    if image.ndim != 3:
        raise ValueError(f"{where}: expected one image [H, W, C] (vmap for a batch), "
                         f"found shape {tuple(image.shape)}")


BORDERS = ("clip", "shift")


def window_starts(size: int, window: int, stride: int, border: str = "clip") -> list[int]:
    """Top/left corners of the occlusion windows along one side of `size` pixels.

    "clip" (Captum's `Occlusion`): 0, stride, 2*stride, ... up to ceil((size - window) / stride)
    strides, so the last window reaches the far border and is clipped there when the stride does not
    tile the side (e.g. size 21, window 6, stride 4: 0, 4, 8, 12, 16, the last one 5 pixels wide).
    "shift": 0, stride, ... while the window fits, plus size - window (a full window flush with the
    far border) when the stride does not reach it.
    """
    if not 0 < window <= size or stride < 1:
        raise ValueError(f"occlusion: need 0 < window <= image side and stride >= 1, found "
                         f"window={window}, side={size}, stride={stride}")
    if border not in BORDERS:
        raise ValueError(f"occlusion: border must be one of {BORDERS}, found {border!r}")
    if border == "clip":
        return [k * stride for k in range(-(-(size - window) // stride) + 1) if k * stride < size]
    starts = list(range(0, size - window + 1, stride))
    return starts if starts[-1] == size - window else starts + [size - window]


def occlusion(score_fn: Callable[[Array], Array], image: Array, target, *, window: int = 16,
              stride: int = 8, value: float = 0.0, border: str = "clip",
              batch_size: Optional[int] = 64) -> Array:
    """Occlusion (Zeiler & Fergus 2014), equal to Captum's `Occlusion`: -> [H, W] on the image grid.

    A window x window square (all channels; clipped at the image border) is set to `value` at every
    corner of `window_starts(..., border)`; each pixel gets the mean of S_t(x) - S_t(occluded) over
    the windows covering it. The default `border="clip"` is Captum's rule
    (`sliding_window_shapes=(C, window, window)`, `strides=stride`, `baselines=value`); "shift" moves
    the last window inside the image instead (full-size windows only; not Captum's maps when the
    stride does not tile the image).
    """
    _check_image(image, "occlusion")
    h, w, _ = image.shape
    ys, xs = window_starts(h, window, stride, border), window_starts(w, window, stride, border)
    corners = jnp.array([(y, x) for y in ys for x in xs])
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    score = score_fn(image)[target]

    def box(corner):
        y, x = corner[0], corner[1]
        return ((rows >= y) & (rows < y + window) & (cols >= x) & (cols < x + window)).astype(image.dtype)

    def drop(corner):
        m = box(corner)[..., None]
        return score - score_fn(image * (1 - m) + value * m)[target]

    drops = _map(drop, corners, batch_size)
    boxes = jax.vmap(box)(corners)                                   # [n, H, W]
    total = jnp.tensordot(drops, boxes, axes=1, precision=_HIGHEST)
    return total / jnp.maximum(boxes.sum(0), 1.0)


def _resize_bilinear(x, shape):
    return jax.image.resize(x, shape, method="linear")


def scorecam(score_fn: Callable[[Array], Array], image: Array, features: Array, target, *,
             batch_size: Optional[int] = 32) -> Array:
    """Score-CAM (Wang et al. 2020, as pytorch-grad-cam): -> [h, w] on the feature grid.

    Each channel A_k is bilinearly upsampled to the image, min-max normalised to M_k in [0, 1]
    (+1e-8 in the denominator), the image is masked x * M_k and scored; the channel weights are
    softmax_k(S_t(x * M_k)); map = ReLU(sum_k w_k A_k).
    """
    _check_image(image, "scorecam")
    check_features(features, "scorecam")
    h, w, _ = image.shape

    def channel_score(a):
        m = _resize_bilinear(a, (h, w))
        m = (m - m.min()) / (m.max() - m.min() + 1e-8)
        return score_fn(image * m[..., None])[target]

    scores = _map(channel_score, jnp.moveaxis(features, -1, 0), batch_size)
    weights = jax.nn.softmax(scores)
    return jax.nn.relu(jnp.einsum("hwk,k->hw", features, weights, precision=_HIGHEST))


def ablationcam(head_fn: Callable[[Array], Array], features: Array, target, *,
                batch_size: Optional[int] = 32) -> Array:
    """Ablation-CAM (Desai & Ramaswamy 2020): -> [h, w].

    Channel k of the feature map is set to 0 (all locations), w_k = (y - y_k) / y with y the
    target score and y_k the score after the ablation; map = ReLU(sum_k w_k A_k).
    """
    check_features(features, "ablationcam")
    k = features.shape[-1]
    y = head_fn(features)[target]

    def ablated(i):
        keep = 1.0 - jax.nn.one_hot(i, k, dtype=features.dtype)
        return head_fn(features * keep)[target]

    y_k = _map(ablated, jnp.arange(k), batch_size)
    weights = (y - y_k) / y
    return jax.nn.relu(jnp.einsum("hwk,k->hw", features, weights, precision=_HIGHEST))
