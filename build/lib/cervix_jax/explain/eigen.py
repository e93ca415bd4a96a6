"""Eigen-CAM (Muhammad & Yeasin 2020): the first principal component of the feature map."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from cervix_jax.explain.cam import check_features

Array = jax.Array


def eigencam(features: Array) -> Array:
    """ReLU of the projection of the centred features [H*W, K] on their first principal axis.

    As pytorch-grad-cam (centre over locations, project, ReLU), with the sign the SVD leaves open
    fixed so that the axis v has sum_k v_k >= 0: the map then correlates positively with the
    channel sum of the features. The axis is the top eigenvector of the K x K scatter matrix.
    -> [H, W].
    """
    check_features(features, "eigencam")
    h, w, k = features.shape
    x = features.reshape(h * w, k)
    x = x - x.mean(axis=0)
    scatter = jnp.matmul(x.T, x, precision=jax.lax.Precision.HIGHEST)
    _, vecs = jnp.linalg.eigh(scatter)
    v = vecs[:, -1]
    v = jnp.where(jnp.sum(v) < 0, -v, v)
    return jax.nn.relu(jnp.matmul(x, v, precision=jax.lax.Precision.HIGHEST)).reshape(h, w)
