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


@dataclasses.dataclass(frozen=True)
class ExplainableModel:
    """Single-example views of a model.

    features:  image [H, W, 3] (preprocessed) -> feature map [h, w, K] (the layer explained).
    head:      feature map [h, w, K] -> class scores [C] (as the model outputs them, e.g. softmax).
    scores:    image [H, W, 3] -> class scores [C]; equals head(features(image)).
    post_pool: pooled [K] -> scores [C], set iff head(f) == post_pool(f.mean((0, 1))) (CRM fast path).
    kernel:    dense kernel [K, C] of a GAP + dense head (for CAM), else None.
    weights:   image [H, W, 3] -> [h, w] interpretation map of the model itself (paper A's patch
               weights), else None.
    crm:       feature map [h, w, K] -> [h, w], an exact closed form of crm(head, features) when the
               head allows one that `post_pool` does not cover (paper A's weighted aggregation).
    class_names: names of the C classes.
    """

    features: Callable[[Array], Array]
    head: Callable[[Array], Array]
    scores: Callable[[Array], Array]
    post_pool: Optional[Callable[[Array], Array]] = None
    kernel: Optional[Array] = None
    weights: Optional[Callable[[Array], Array]] = None
    crm: Optional[Callable[[Array], Array]] = None
    class_names: tuple[str, ...] = ("negative", "positive")
