"""Gradient explainers: the Grad-CAM family on the feature grid, integrated gradients on the image.

Feature-grid maps take `head_fn` (features [H, W, K] -> scores [C]), the feature map and a target
class, and return [H, W] after the ReLU each method's paper applies (pytorch-grad-cam's behaviour).
Gradients are of the head's output as given (softmax for paper B): for a linear GAP + dense head
Grad-CAM and HiResCAM equal ReLU(CAM_target) / (H*W).
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cervix_jax.explain.cam import check_features

Array = jax.Array
_HIGHEST = jax.lax.Precision.HIGHEST


def _target_gradient(head_fn, features, target):
    return jax.grad(lambda f: head_fn(f)[target])(features)


def _weighted_sum(features, alpha):
    return jnp.einsum("hwk,k->hw", features, alpha, precision=_HIGHEST)


def gradcam(head_fn: Callable[[Array], Array], features: Array, target) -> Array:
    """Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k alpha_k A_k), alpha_k = mean_yx dS/dA_k."""
    check_features(features, "gradcam")
    g = _target_gradient(head_fn, features, target)
    return jax.nn.relu(_weighted_sum(features, g.mean((0, 1))))


def hirescam(head_fn: Callable[[Array], Array], features: Array, target) -> Array:
    """HiResCAM (Draelos & Carin 2020): ReLU(sum_k dS/dA_k * A_k), elementwise."""
    check_features(features, "hirescam")
    g = _target_gradient(head_fn, features, target)
    return jax.nn.relu(jnp.sum(g * features, axis=-1))


def gradcam_plus_plus(head_fn: Callable[[Array], Array], features: Array, target) -> Array:
    """Grad-CAM++ (Chattopadhay et al. 2018, Eqn. 19 with exp scores, as pytorch-grad-cam).

    a_yxk = g^2 / (2 g^2 + sum_yx A_k * g^3 + 1e-6) (0 where g = 0);
    alpha_k = sum_yx a_yxk ReLU(g_yxk); map = ReLU(sum_k alpha_k A_k).
    """
    check_features(features, "gradcam++")
    g = _target_gradient(head_fn, features, target)
    g2 = g * g
    a = g2 / (2 * g2 + features.sum((0, 1)) * g2 * g + 1e-6)
    a = jnp.where(g != 0, a, 0.0)
    alpha = jnp.sum(a * jax.nn.relu(g), axis=(0, 1))
    return jax.nn.relu(_weighted_sum(features, alpha))


def xgradcam(head_fn: Callable[[Array], Array], features: Array, target) -> Array:
    """XGrad-CAM (Fu et al. 2020): alpha_k = sum_yx g A_k / (sum_yx A_k + 1e-7)."""
    check_features(features, "xgradcam")
    g = _target_gradient(head_fn, features, target)
    alpha = jnp.sum(g * features, axis=(0, 1)) / (features.sum((0, 1)) + 1e-7)
    return jax.nn.relu(_weighted_sum(features, alpha))


def layercam(head_fn: Callable[[Array], Array], features: Array, target) -> Array:
    """LayerCAM (Jiang et al. 2021): ReLU(sum_k ReLU(g_yxk) A_yxk)."""
    check_features(features, "layercam")
    g = _target_gradient(head_fn, features, target)
    return jax.nn.relu(jnp.sum(jax.nn.relu(g) * features, axis=-1))


def integrated_gradients(score_fn: Callable[[Array], Array], image: Array, target, *,
                         baseline: Optional[Array] = None, steps: int = 32,
                         batch_size: Optional[int] = 8) -> Array:
    """Integrated gradients (Sundararajan et al. 2017, Eqn. 1), summed over colour channels.

    score_fn: image [H, W, 3] -> scores [C]. IG = (x - x') * int_0^1 dS_t/dx (x' + a (x - x')) da,
    the integral by `steps`-point Gauss-Legendre quadrature (Captum's default rule); baseline x'
    zeros unless given. Completeness: the map sums to S_t(x) - S_t(x') up to quadrature error.
    -> [H, W]. `batch_size` chunks the steps with `jax.lax.map` (None: all at once).
    """
    if image.ndim != 3:
        raise ValueError(f"integrated_gradients: expected one image [H, W, C], found {image.shape}")
    x0 = jnp.zeros_like(image) if baseline is None else baseline
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    alphas = jnp.asarray((nodes + 1) / 2, image.dtype)
    weights = jnp.asarray(weights / 2, image.dtype)
    grad = jax.grad(lambda x: score_fn(x)[target])

    def step(a):
        return grad(x0 + a * (image - x0))

    if batch_size is None:
        grads = jax.vmap(step)(alphas)
    else:
        grads = jax.lax.map(step, alphas, batch_size=batch_size)
    mean_grad = jnp.tensordot(weights, grads, axes=1, precision=_HIGHEST)
    return jnp.sum((image - x0) * mean_grad, axis=-1)
