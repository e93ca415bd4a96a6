"""RetinaNet losses: sigmoid focal loss (classification) and smooth-L1 / L1 (box regression).

    focal(x, t) = alpha_t * (1 - p_t)^gamma * BCE(x, t),  p = sigmoid(x),
    p_t = p t + (1 - p)(1 - t),  alpha_t = alpha t + (1 - alpha)(1 - t)      (Lin et al. 2017, Eq. 5)

`retinanet_loss` sums the focal loss over non-ignored anchors and all classes and the box loss over
positive anchors, each divided by max(1, number of positive anchors in the whole batch) (keras-retinanet's
normaliser; under `jit` with a sharded batch the sums are global). Computed in float32 whatever the
logits' dtype.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from cervix_jax.detection.matching import IGNORE, POSITIVE

BOX_LOSSES = ("smooth_l1", "l1")


def focal_loss(logits, targets, *, alpha: float = 0.25, gamma: float = 2.0):
    """Elementwise focal loss, same shape as `logits` (float32); targets in {0, 1}."""
    x = jnp.asarray(logits, jnp.float32)
    t = jnp.asarray(targets, jnp.float32)
    p = jax.nn.sigmoid(x)
    ce = optax.sigmoid_binary_cross_entropy(x, t)
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return alpha_t * (1 - p_t) ** gamma * ce


def smooth_l1(x, beta: float = 1.0 / 9.0):
    """0.5 x^2 / beta for |x| < beta, else |x| - beta / 2 (keras-retinanet sigma = 3: beta = 1/9)."""
    a = jnp.abs(x)
    return jnp.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


def retinanet_loss(cls_logits, box_deltas, targets, *, box_loss: str = "smooth_l1", alpha: float = 0.25,
                   gamma: float = 2.0):
    """cls_logits [B, A, C], box_deltas [B, A, 4], targets from `detection_targets` ->
    (total, {"cls_loss", "box_loss", "num_positive"})."""
    chex.assert_equal_shape([cls_logits, targets["cls"]])
    chex.assert_equal_shape([box_deltas, targets["box"]])
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"retinanet_loss: box_loss expected one of {BOX_LOSSES}, found {box_loss!r}")
    state = targets["state"]
    pos = (state == POSITIVE).astype(jnp.float32)
    n = jnp.maximum(jax.lax.stop_gradient(pos.sum()), 1.0)
    fl = focal_loss(cls_logits, targets["cls"], alpha=alpha, gamma=gamma)
    cls = jnp.sum(fl * (state != IGNORE)[..., None]) / n
    diff = jnp.asarray(box_deltas, jnp.float32) - targets["box"]
    per = smooth_l1(diff) if box_loss == "smooth_l1" else jnp.abs(diff)
    box = jnp.sum(per * pos[..., None]) / n
    return cls + box, {"cls_loss": cls, "box_loss": box, "num_positive": pos.sum()}
