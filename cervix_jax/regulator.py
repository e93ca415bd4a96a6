"""Paper A's Gaussian spatial regulator (Zhang et al., AAAI-21), as pure functions.

Every function takes ONE image's arrays (no batch axis); batch with `jax.vmap`.

Coordinates are patch-grid units: patch (row i, column j) sits at m = (j, i), i.e. x = column,
y = row, with patch centres at integer positions. A [h, w] grid therefore spans x in [-0.5, w - 0.5]
and y in [-0.5, h - 0.5]; its centre is ((w - 1) / 2, (h - 1) / 2).
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = jax.Array

MINMAX_EPS = 1e-6


def grid_positions(shape: tuple[int, int]) -> Array:
    """Positions m = (column j, row i) of an [h, w] patch grid, float32 [h, w, 2]."""
    h, w = shape
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                              indexing="ij")
    return jnp.stack([cols, rows], axis=-1)


def fit_gaussian(weights: Array) -> tuple[Array, Array]:
    """Weighted MLE of a 2D Gaussian over the grid positions (Eqns. 8-10).

    mu = sum w m / sum w; cov = sum w (m - mu)(m - mu)^T / sum w (the MLE, not the unbiased form).
    Returns (mu [2] = (x, y), cov [2, 2]) in patch-grid units. No guards: an all-zero map gives nan
    (use `refit` for the guarded update).
    """
    chex.assert_rank(weights, 2)
    w = weights.astype(jnp.float32)
    m = grid_positions(w.shape)                                  # [h, w, 2]
    total = w.sum()
    mu = jnp.einsum("ij,ijk->k", w, m) / total                   # Eqn. 9
    d = m - mu                                                   # centred first: no cancellation
    cov = jnp.einsum("ij,ijk,ijl->kl", w, d, d) / total          # Eqn. 10
    return mu, 0.5 * (cov + cov.T)


def gaussian_density(mu: Array, cov: Array, shape: tuple[int, int]) -> Array:
    """The normalised 2D normal pdf N(m | mu, cov) at every grid position m = (j, i), float32 [h, w].

    pdf(m) = exp(-0.5 (m - mu)^T cov^-1 (m - mu)) / (2 pi sqrt(det cov)). Its scale does not matter
    to the spatial loss (`dissimilarity` min-max normalises it) but it is the true density.
    """
    chex.assert_shape(mu, (2,))
    chex.assert_shape(cov, (2, 2))
    a, b, c, d_ = cov[0, 0], cov[0, 1], cov[1, 0], cov[1, 1]
    det = a * d_ - b * c
    inv = jnp.array([[d_, -b], [-c, a]]) / det                   # closed-form 2x2 inverse
    d = grid_positions(shape) - mu
    maha = jnp.einsum("ijk,kl,ijl->ij", d, inv, d)
    return jnp.exp(-0.5 * maha) / (2.0 * jnp.pi * jnp.sqrt(det))


def minmax(x: Array, eps: float = MINMAX_EPS) -> Array:
    """(x - min) / (max - min + eps) over the whole map."""
    return (x - x.min()) / (x.max() - x.min() + eps)


def dissimilarity(a: Array, s: Array, *, eps: float = MINMAX_EPS) -> Array:
    """D = 1 - minmax(a) * minmax(s) per patch (Eqn. 6); minmax(x) = (x - min) / (max - min + eps)."""
    chex.assert_rank(a, 2)
    chex.assert_equal_shape([a, s])
    return 1.0 - minmax(a, eps) * minmax(s, eps)


SPATIAL_REDUCTIONS = ("sum", "mean")


def spatial_loss(a: Array, mu: Array, cov: Array, *, reduction: str) -> Array:
    """Spatial loss of Eqn. 5 over one image's patches: D(a, s) summed ("sum", the paper's
    L_spatial = sum_m D(a_m, s_m)) or averaged ("mean" = sum / (h w)), s = the regulator's density.

    The regulator (mu, cov) is a per-image constant target (stop_gradient): gradients reach only the
    patch weights a. With "sum" the weight of lambda grows with the grid (lambda = 0.1 on a 42 x 42
    grid is lambda = 176.4 under "mean"); "mean" makes lambda mean the same for every grid.
    """
    if reduction not in SPATIAL_REDUCTIONS:
        raise ValueError(f"config.model.spatial_reduction: expected one of {SPATIAL_REDUCTIONS}, "
                         f"found {reduction!r}")
    mu, cov = jax.lax.stop_gradient(mu), jax.lax.stop_gradient(cov)
    s = gaussian_density(mu, cov, a.shape)
    d = dissimilarity(a, s)
    return d.sum() if reduction == "sum" else d.mean()


def init_regulator(shape: tuple[int, int]) -> tuple[Array, Array]:
    """The first regulator of every image: centred, stds of half the grid's width and height.

    The paper's sigma_hh = w0, sigma_vv = h0 (half width/height) read as standard deviations, so
    cov = diag((w / 2)^2, (h / 2)^2) in patch units (e.g. std 21 patches on a 42 x 42 grid).
    """
    h, w = shape
    mu = jnp.array([(w - 1) / 2.0, (h - 1) / 2.0], jnp.float32)
    cov = jnp.diag(jnp.array([(w / 2.0) ** 2, (h / 2.0) ** 2], jnp.float32))
    return mu, cov


def refit(prev_mu: Array, prev_cov: Array, weights: Array, *, eps_w: float,
          eig_floor: float) -> tuple[Array, Array, Array]:
    """One regulator update (Algorithm 1): the weighted MLE of `weights` if valid, else the previous.

    The fitted covariance gets its eigenvalues floored at `eig_floor` (patch units^2; one dominant
    patch would give cov = 0). The fit is valid iff
      - sum(weights) > eps_w (otherwise mu = 0/0),
      - mu and cov are finite,
      - mu lies inside the image: x in [-0.5, w - 0.5], y in [-0.5, h - 0.5] (the paper's rule),
      - the fitted cov is positive semi-definite before flooring (min eigenvalue >= -eig_floor;
        only negative weights can break this), hence positive definite after it.
    Returns (mu [2], cov [2, 2], valid [] bool). Jittable: no Python branching on values.
    """
    chex.assert_shape(prev_mu, (2,))
    chex.assert_shape(prev_cov, (2, 2))
    chex.assert_rank(weights, 2)
    if not eig_floor > 0:
        raise ValueError(f"refit: eig_floor must be > 0 (patch units^2), found {eig_floor}")
    h, w = weights.shape
    mu, cov = fit_gaussian(weights)
    finite = jnp.all(jnp.isfinite(mu)) & jnp.all(jnp.isfinite(cov))
    safe_cov = jnp.where(finite, cov, jnp.eye(2, dtype=cov.dtype))   # keep eigh away from nan
    evals, evecs = jnp.linalg.eigh(safe_cov)
    floored = (evecs * jnp.maximum(evals, eig_floor)) @ evecs.T
    floored = 0.5 * (floored + floored.T)
    inside = (mu[0] >= -0.5) & (mu[0] <= w - 0.5) & (mu[1] >= -0.5) & (mu[1] <= h - 0.5)
    valid = (weights.sum() > eps_w) & finite & inside & (evals[0] >= -eig_floor)
    return (jnp.where(valid, mu, prev_mu), jnp.where(valid, floored, prev_cov), valid)


def mask_centre(mask, patch: int = 1):
    """(x, y) centroid of a mask [H, W] (NumPy) in units of `patch` pixels, where the centre of patch
    (i, j) is at (j, i): pixel units with patch=1. (nan, nan) when the mask is absent or empty."""
    import numpy as np
    if mask is None or not np.any(mask):
        return (float("nan"), float("nan"))
    ys, xs = np.nonzero(mask)
    return ((xs.mean() + 0.5) / patch - 0.5, (ys.mean() + 0.5) / patch - 0.5)
