"""Class-selective Relevance Map (Kim, Rajaraman, Antani, Diagnostics 2019; Guo et al. 2021).

CRM zero-ablates one feature location (all K channels at (y, x)) and scores the squared change of
every class output: M(y, x) = sum_c (s_c - s_c(y, x))^2.

Score space (the `s` above) is a user-visible choice; the maps differ (see docs/explainers.md):
- `crm`, `crm_pooled`: the head's outputs as the model gives them (softmax for paper B).
- `crm_nlm`: the authors' group's public Keras code: dense kernel only, no bias, no softmax, sum
  pooling, so s_c = sum_xy CAM_c and the ablation removes exactly CAM_c(y, x): M = sum_c CAM_c^2.
- `crm_linear`: paper B's Section 3.3, "using Equation (1)": s_c = sum_k w_k^c F_k with F the head's
  own pooling of the features (GAP, over the valid region when padded), no bias, no softmax; ablating
  (y, x) lowers s_c by p(y, x) CAM_c(y, x), so M = sum_c (p CAM_c)^2 (p = the pooling weight of the
  location, 1 / (h w) for a plain GAP). Up to the factor p^2 (constant without padding) this is
  `crm_nlm`'s map.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cervix_jax.explain.cam import cam, check_features

Array = jax.Array


def crm(head_fn: Callable[[Array], Array], features: Array, *,
        batch_size: Optional[int] = None) -> Array:
    """CRM of any head: M(y, x) = sum_c (s_c - s_c(y, x))^2 -> [H, W].

    head_fn: features [H, W, K] -> scores [C]. s(y, x) = head_fn(features with [y, x, :] = 0).
    Vmapped over the H*W locations; with `batch_size`, `jax.lax.map` runs chunks of that many
    locations in turn, so only `batch_size` ablated copies of the map exist at a time.
    """
    check_features(features, "crm")
    h, w, _ = features.shape
    scores = head_fn(features)

    def ablated(i):
        keep = 1.0 - jax.nn.one_hot(i, h * w, dtype=features.dtype).reshape(h, w, 1)
        return jnp.sum((scores - head_fn(features * keep)) ** 2)

    locations = jnp.arange(h * w)
    if batch_size is None:
        m = jax.vmap(ablated)(locations)
    else:
        m = jax.lax.map(ablated, locations, batch_size=batch_size)
    return m.reshape(h, w)


_CHUNK = 1000  # locations per step of crm_pooled: keeps its per-location arrays in cache


def crm_pooled(post_pool_fn: Callable[[Array], Array], features: Array,
               weights: Optional[Array] = None) -> Array:
    """Exact CRM of the head f -> post_pool_fn(f.mean((0, 1))) -> [H, W], without copies of f.

    Zeroing (y, x) moves the pooled vector p to p - d with d = features[y, x] / (H*W), so
    M(y, x) = sum_c (g_c(p) - g_c(p - d))^2 for g = post_pool_fn: H*W evaluations of g on [K].
    With pooling `weights` [H, W] (summing to 1; e.g. GAP over the unpadded region of a padded
    image) the head is f -> post_pool_fn(sum_yx weights f) and d = weights[y, x] features[y, x].

    The plain difference g(p) - g(p - d) cancels: in float32 its relative error grows like
    eps * H*W. Instead g(p) - g(p - d) = int_0^1 J_g(p - t d) d dt is integrated by Simpson's
    rule on three jvps (no subtraction of nearly equal scores). Per location and class the value
    with the smaller estimated error is kept: Simpson's error is bounded by |S - Mid| (Mid: the
    midpoint rule, error O(|d|^2) against Simpson's O(|d|^4); a kink shows up here too), the plain
    difference's as 4 eps (|g(p)| + |g(p - d)|). Simpson wins on large maps; the plain difference
    on tiny maps and where a ReLU kink lies between p - d and p. Locations go in chunks of
    `_CHUNK` read straight from `features` (no [H*W, K] temporaries).
    """
    check_features(features, "crm_pooled")
    h, w, k = features.shape
    n = h * w
    f = features.reshape(n, k)
    if weights is None:
        wf = f / n
    else:
        if weights.shape != (h, w):
            raise ValueError(f"crm_pooled: expected weights [{h}, {w}], found {tuple(weights.shape)}")
        wf = f * weights.reshape(n, 1).astype(f.dtype)
    p = jnp.sum(wf, axis=0) if weights is not None else jnp.mean(f, axis=0)
    scores = post_pool_fn(p)
    eps = jnp.finfo(scores.dtype).eps

    def tangent(x, d):
        return jax.jvp(post_pool_fn, (x,), (d,))

    def location(d):
        _, at_p = tangent(p, d)
        _, at_mid = tangent(p - 0.5 * d, d)
        ablated, at_end = tangent(p - d, d)
        simpson = (at_p + 4 * at_mid + at_end) / 6
        plain = scores - ablated
        simpson_error = jnp.abs(simpson - at_mid)
        plain_error = 4 * eps * (jnp.abs(scores) + jnp.abs(ablated))
        delta = jnp.where(simpson_error <= plain_error, simpson, plain)
        return jnp.sum(delta ** 2)

    size = min(_CHUNK, n)
    starts = np.minimum(np.arange(0, n, size), n - size)      # the last chunk may overlap
    chunks = jax.lax.map(
        lambda s: jax.vmap(location)(jax.lax.dynamic_slice_in_dim(wf, s, size)), jnp.asarray(starts))
    m = jnp.concatenate([chunks[:-1].reshape(-1), chunks[-1][len(starts) * size - n:]])
    return m.reshape(h, w)


def crm_nlm(features: Array, kernel: Array) -> Array:
    """CRM as in the NLM group's Keras code: bias-free dense scores of sum-pooled features.

    s_c = sum_xy sum_k kernel[k, c] features[y, x, k]; ablating (y, x) removes CAM_c(y, x), so
    M(y, x) = sum_c CAM_c(y, x)^2 -> [H, W].
    """
    return jnp.sum(cam(features, kernel) ** 2, axis=-1)


def crm_linear(features: Array, kernel: Array, pool_weights: Optional[Array] = None) -> Array:
    """CRM in paper B's Eq. (1) score space: s_c = sum_k kernel[k, c] F_k, F = sum_yx p(y, x) f(y, x)
    (p = `pool_weights` [h, w], the uniform 1 / (h w) when None), no bias and no softmax. Ablating the
    location (y, x) changes s_c by exactly p(y, x) CAM_c(y, x), so M(y, x) = sum_c (p CAM_c)^2 -> [h, w].
    """
    check_features(features, "crm_linear")
    h, w, _ = features.shape
    p = (jnp.full((h, w), 1.0 / (h * w), features.dtype) if pool_weights is None
         else jnp.asarray(pool_weights, features.dtype))
    if p.shape != (h, w):
        raise ValueError(f"crm_linear: expected pool_weights of shape {(h, w)} (the feature grid), "
                         f"found {p.shape}")
    return jnp.sum((cam(features, kernel) * p[..., None]) ** 2, axis=-1)
