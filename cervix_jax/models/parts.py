"""The pieces of a trained model that explainers need, as plain functions of arrays.

A model family (paper B's pyramid classifier, paper A's patch model) returns an
`ExplainableModel` with its variables already closed over, so that an explainer needs nothing but
functions and arrays. All functions take ONE example (no batch axis); batch with `jax.vmap`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Mixed precision (config.model.dtype): the compute dtype of convolutions and dense layers.
# Parameters, optimizer state, losses, metrics and the outputs a model hands to the engine or the
# explainers stay float32 whatever this is.
COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(name: str):
    """config.model.dtype ("float32" | "bfloat16") -> the jnp dtype of the activations."""
    if str(name) not in COMPUTE_DTYPES:
        raise ValueError(f"config.model.dtype: expected one of {COMPUTE_DTYPES}, found {name!r}")
    return jnp.dtype(str(name))


def _overlap_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in]: share of output cell i (the interval [i n_in / n_out, (i+1) n_in / n_out) of
    input pixels) covered by input pixel p. Rows sum to 1."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    p = np.arange(n_in)[None, :]
    return (np.clip(np.minimum(hi, p + 1) - np.maximum(lo, p), 0, None) * (n_out / n_in)).astype(np.float32)


def valid_fraction(valid: Array, grid: tuple[int, int]) -> Array:
    """valid [..., H, W] (1 on image pixels, 0 on padding) -> [..., h, w]: the fraction of each cell of
    an h x w grid laid over the image (cell (i, j) = pixels [i H/h, (i+1) H/h) x [j W/w, (j+1) W/w),
    split exactly where a pixel straddles two cells) that is image. For a stride-s feature map of an
    image padded to H = h s this is the valid share of each s x s block; on the image grid it is
    `valid` itself."""
    h_in, w_in = valid.shape[-2:]
    ay = jnp.asarray(_overlap_matrix(h_in, grid[0]))
    ax = jnp.asarray(_overlap_matrix(w_in, grid[1]))
    v = jnp.asarray(valid, jnp.float32)
    return jnp.einsum("ip,...pq,jq->...ij", ay, v, ax, precision=jax.lax.Precision.HIGHEST)


def masked_mean(feature_map: Array, weights: Optional[Array]) -> Array:
    """[..., h, w, K] -> [..., K]: sum_hw weights * f / sum_hw weights (the global average pooling
    of the valid region); the plain mean when `weights` is None. An all-zero weight map gives 0."""
    if weights is None:
        return feature_map.mean((-3, -2))
    total = weights.sum((-2, -1))[..., None]
    pooled = jnp.einsum("...hwk,...hw->...k", feature_map, weights.astype(feature_map.dtype),
                        precision=jax.lax.Precision.HIGHEST)
    return pooled / jnp.maximum(total, 1e-12)


@dataclasses.dataclass(frozen=True)
class ExplainableModel:
    """Single-example views of a model.

    features:  image [H, W, 3] (preprocessed) -> feature map [h, w, K] (the layer explained).
    head:      feature map [h, w, K] -> class scores [C] (as the model outputs them, e.g. softmax).
    scores:    image [H, W, 3] -> class scores [C]; equals head(features(image)).
    post_pool: pooled [K] -> scores [C], set iff head(f) == post_pool(sum_yx pool_weights f) (CRM fast
               path); the pooling is the plain mean when pool_weights is None.
    kernel:    dense kernel [K, C] of a GAP + dense head (for CAM), else None.
    weights:   image [H, W, 3] -> [h, w] interpretation map of the model itself (paper A's patch
               weights), else None.
    crm:       feature map [h, w, K] -> [h, w], an exact closed form of crm(head, features) when the
               head allows one that `post_pool` does not cover (paper A's weighted aggregation).
    class_names: names of the C classes.
    for_valid: valid [H, W] (1 on image pixels, 0 on the padding up to pad_to) -> the ExplainableModel
               of an image padded that way (paper B: GAP over the valid region only), else None
               (the model ignores padding).
    pool_weights: [h, w] pooling weights (summing to 1) of the head, when they are not uniform (set by
               for_valid), else None.
    """

    features: Callable[[Array], Array]
    head: Callable[[Array], Array]
    scores: Callable[[Array], Array]
    post_pool: Optional[Callable[[Array], Array]] = None
    kernel: Optional[Array] = None
    weights: Optional[Callable[[Array], Array]] = None
    crm: Optional[Callable[[Array], Array]] = None
    class_names: tuple[str, ...] = ("negative", "positive")
    for_valid: Optional[Callable[[Array], "ExplainableModel"]] = None
    pool_weights: Optional[Array] = None


def with_valid(model: ExplainableModel, valid: Optional[Array]) -> ExplainableModel:
    """`model.for_valid(valid)` when both exist, else `model`."""
    if valid is None or model.for_valid is None:
        return model
    return model.for_valid(valid)


def random_variables(shapes, rng: np.random.Generator):
    """Random arrays shaped like `shapes` (a tree of ShapeDtypeStructs, e.g. `jax.eval_shape` of an
    init): kernels N(0, 1/fan_in), BatchNorm `scale` and `var` U(0.5, 1.5), other float leaves
    N(0, 0.1^2), integer leaves zero. For benchmarks and tests: compiling a Flax init (threefry for every
    parameter) can cost more than the steps they time or check."""
    def leaf(path, s):
        name = str(getattr(path[-1], "key", "")) if path else ""
        if not jnp.issubdtype(s.dtype, jnp.floating):
            return jnp.zeros(s.shape, s.dtype)
        if name == "kernel":
            x = rng.normal(size=s.shape) / np.sqrt(max(1, int(np.prod(s.shape[:-1]))))
        elif name in ("scale", "var"):
            x = rng.uniform(0.5, 1.5, s.shape)
        else:
            x = rng.normal(size=s.shape) * 0.1
        return jnp.asarray(x, s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)
