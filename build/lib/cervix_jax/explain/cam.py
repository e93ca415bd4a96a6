"""Class activation maps (Zhou et al., CVPR 2016)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


def check_features(features: Array, where: str) -> None:
    """Raises unless `features` is one feature map [H, W, K] (no batch axis)."""
    if features.ndim != 3:
        raise ValueError(f"{where}: expected one feature map [H, W, K] (vmap for a batch), "
                         f"found shape {tuple(features.shape)}")


def cam(features: Array, kernel: Array) -> Array:
    """CAM of every class: CAM_c(y, x) = sum_k kernel[k, c] * features[y, x, k] (Eqn. 2).

    features [H, W, K], kernel [K, C] (the dense layer after global average pooling) -> [H, W, C].
    Raw values (signed, no ReLU, no normalisation); see `postprocess.heatmap` for display.
    """
    check_features(features, "cam")
    chex.assert_rank(kernel, 2)
    if kernel.shape[0] != features.shape[-1]:
        raise ValueError(f"cam: kernel must be [K, C] with K = features.shape[-1] = "
                         f"{features.shape[-1]}, found kernel shape {tuple(kernel.shape)}")
    return jnp.einsum("hwk,kc->hwc", features, kernel, precision=jax.lax.Precision.HIGHEST)
