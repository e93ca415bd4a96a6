"""Paper B's out-of-focus degradation: a separable Gaussian blur that matches OpenCV's
`cv2.GaussianBlur(img, (k, k), 0)` for k >= 11 and `cv2.GaussianBlur(img, (k, k), sigma)` for any k
(sigma rule, reflect-101 borders; uint8 in OpenCV's fixed-point arithmetic, so bit-exact).

uint8 images follow OpenCV's 8-bit path: the taps are quantised to multiples of 1/256 by OpenCV's
error-diffusion rule (`fixed_point_kernel`), both passes run in exact integers, and the result is
rounded half up. Exact float64 rounding would differ from OpenCV by up to 2 grey levels, because
OpenCV's quantised taps are not the exact Gaussian.

For the small sizes OpenCV tabulates when sigma is 0 (3, 5, 7 and, in OpenCV 5, 9) it uses fixed
binomial-like taps instead of its own sigma rule; this module always uses the rule (the paper's sizes
are 19 and 49).
"""
from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np


def opencv_sigma(ksize: int) -> float:
    """OpenCV's sigma for a kernel size when none is given: 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8."""
    return 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8


def gaussian_kernel(ksize: int, sigma: Optional[float] = None) -> np.ndarray:
    """Normalised 1D Gaussian taps, float64 [ksize], centred on index ksize // 2."""
    _check_ksize(ksize)
    sigma = opencv_sigma(ksize) if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"gaussian_blur: sigma must be > 0 (or None for OpenCV's rule), got {sigma}")
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2
    taps = np.exp(-(x * x) / (2 * sigma * sigma))
    return taps / taps.sum()


def fixed_point_kernel(taps: np.ndarray, fraction_bits: int = 8) -> np.ndarray:
    """int64 taps summing to 2**fraction_bits: OpenCV's quantisation of a symmetric odd kernel for its
    8-bit path (getGaussianKernelFixedPoint_ED): from the outside in, each tap is rounded (half to
    even) after adding the previous rounding error; the centre tap takes what is left."""
    taps = np.asarray(taps, np.float64)
    n = taps.size
    if n % 2 != 1:
        raise ValueError(f"fixed_point_kernel: expected an odd number of taps, got {n}")
    one = 1 << fraction_bits
    out = np.zeros(n, np.int64)
    err = 0.0
    for i in range(n // 2):
        adjusted = taps[i] * one + err
        v = int(np.rint(adjusted))
        err = adjusted - v
        out[i] = out[n - 1 - i] = v
    out[n // 2] = one - 2 * int(out[: n // 2].sum())
    return out


def _check_ksize(ksize) -> None:
    if isinstance(ksize, bool) or not isinstance(ksize, (int, np.integer)):
        raise TypeError(f"gaussian_blur: ksize must be a Python int (static), got {type(ksize).__name__}")
    if ksize < 0 or (ksize > 1 and ksize % 2 == 0):
        raise ValueError(f"gaussian_blur: ksize must be 0, 1 or an odd positive int, got {ksize}")


def gaussian_blur(images: jax.Array, ksize: int, sigma: Optional[float] = None) -> jax.Array:
    """Blurs images [..., H, W, C] with a ksize x ksize Gaussian; same shape and dtype.

    sigma None -> OpenCV's rule. Borders reflect-101 (OpenCV's default, scipy's "mirror").
    uint8 images: OpenCV's fixed-point path (taps in 1/256, exact integer sums, rounded half up).
    Other integer images are computed in float32, then rounded and clipped to their dtype's range.
    ksize 0 or 1 returns the images unchanged. Jittable with ksize (and sigma) static.
    """
    _check_ksize(ksize)
    if ksize <= 1:
        return jnp.asarray(images)
    if jnp.ndim(images) < 3:
        raise ValueError(f"gaussian_blur: expected images [..., H, W, C], got shape {jnp.shape(images)}")
    taps = gaussian_kernel(ksize, sigma)
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        return _blur_uint8(images, tuple(int(t) for t in fixed_point_kernel(taps)))
    return _blur(images, tuple(float(t) for t in taps))


@functools.partial(jax.jit, static_argnums=1)
def _blur_uint8(images: jax.Array, taps: tuple[int, ...]) -> jax.Array:
    """OpenCV's 8-bit GaussianBlur: integer taps summing to 256, so after both passes the sums carry
    16 fractional bits (at most 255 * 2**16, exact in int32); (sum + 2**15) >> 16 rounds half up."""
    *lead, h, w, c = images.shape
    r = len(taps) // 2
    x = images.reshape((-1, h, w, c)).astype(jnp.int32)
    x = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
    x = sum(t * x[:, i:i + h] for i, t in enumerate(taps) if t)
    x = sum(t * x[:, :, i:i + w] for i, t in enumerate(taps) if t)
    x = jnp.right_shift(x + (1 << 15), 16)
    return jnp.clip(x, 0, 255).astype(jnp.uint8).reshape((*lead, h, w, c))


@functools.partial(jax.jit, static_argnums=1)
def _blur(images: jax.Array, taps: tuple[float, ...]) -> jax.Array:
    dtype = images.dtype
    *lead, h, w, c = images.shape
    x = images.reshape((-1, h, w, c)).astype(jnp.float32)
    r = len(taps) // 2
    x = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")  # numpy "reflect" = reflect-101
    # Separable correlation as a sum of shifted slices: XLA fuses it into one pass per axis, which
    # on CPU is several times faster than a depthwise convolution.
    x = sum(t * x[:, i:i + h] for i, t in enumerate(taps))
    x = sum(t * x[:, :, i:i + w] for i, t in enumerate(taps))
    if jnp.issubdtype(dtype, jnp.integer):
        info = jnp.iinfo(dtype)
        x = jnp.clip(jnp.round(x), info.min, info.max)
    return x.astype(dtype).reshape((*lead, h, w, c))
