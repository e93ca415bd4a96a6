"""Anchor -> ground-truth matching and training targets, jit-friendly with static shapes.

Ground truth is padded to a fixed count G per image: boxes [G, 4], labels [G] (int), valid [G] (bool).
Rule (keras-retinanet thresholds + torchvision's low-quality matches):
  * IoU of every anchor with every valid box (padded boxes count as IoU -1, never chosen);
  * an anchor's box is its argmax; positive if its best IoU >= pos_iou, negative if < neg_iou, ignored
    in between;
  * low-quality matches: every valid box with a best IoU > 0 also makes positive every anchor whose IoU
    with it equals that best IoU (so small boxes always get a positive). torchvision does the same but
    without the "> 0" (a box that overlaps no anchor would make all anchors positive). "Equals" is up to
    a relative 1e-5 (LOW_QUALITY_RTOL): translated copies of one anchor tie exactly in real arithmetic
    but not after float rounding;
  * optionally, anchors whose centre lies outside the valid (unpadded) image region are ignored.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from cervix_jax.detection import boxes as box_ops

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1
LOW_QUALITY_RTOL = 1e-5


def match_anchors(anchors, gt_boxes, gt_valid, *, pos_iou: float = 0.5, neg_iou: float = 0.4,
                  low_quality: bool = True, valid_hw=None):
    """anchors [A, 4], gt_boxes [G, 4], gt_valid [G] -> (matched [A] int32 index into G, state [A] int32
    in {POSITIVE, NEGATIVE, IGNORE}). valid_hw: optional (H, W) of the unpadded image (traced ok)."""
    chex.assert_rank([anchors, gt_boxes, gt_valid], [2, 2, 1])
    iou = jnp.where(gt_valid[None, :], box_ops.box_iou(anchors, gt_boxes), -1.0)   # [A, G]
    best = iou.max(axis=1)
    matched = iou.argmax(axis=1).astype(jnp.int32)
    pos = best >= pos_iou
    neg = best < neg_iou
    if low_quality:
        gt_best = iou.max(axis=0)                                                    # [G]
        hit = gt_valid[None, :] & (gt_best[None, :] > 0) & (iou >= gt_best[None, :] * (1 - LOW_QUALITY_RTOL))
        pos = pos | hit.any(axis=1)
    state = jnp.where(pos, POSITIVE, jnp.where(neg, NEGATIVE, IGNORE)).astype(jnp.int32)
    if valid_hw is not None:
        cx = 0.5 * (anchors[:, 0] + anchors[:, 2])
        cy = 0.5 * (anchors[:, 1] + anchors[:, 3])
        inside = (cx >= 0) & (cy >= 0) & (cx < valid_hw[1]) & (cy < valid_hw[0])
        state = jnp.where(inside, state, IGNORE)
    return matched, state


def detection_targets(anchors, gt_boxes, gt_labels, gt_valid, num_classes: int, *, box_style: str,
                      valid_hw=None, **match_kwargs):
    """Batched targets. anchors [A, 4]; gt_boxes [B, G, 4]; gt_labels [B, G] int; gt_valid [B, G];
    valid_hw: optional [B, 2]. Returns {"cls": [B, A, C] one-hot (0 for negatives and ignored),
    "box": [B, A, 4] encoded (anchor-relative zeros where not positive), "state": [B, A]}."""
    chex.assert_rank([gt_boxes, gt_labels, gt_valid], [3, 2, 2])
    anchors = jnp.asarray(anchors, jnp.float32)

    def one(boxes, labels, valid, hw):
        matched, state = match_anchors(anchors, boxes, valid, valid_hw=hw, **match_kwargs)
        pos = state == POSITIVE
        target = jnp.where(pos[:, None], boxes[matched], anchors)       # safe box where not positive
        box = jnp.where(pos[:, None], box_ops.encode_boxes(anchors, target, style=box_style), 0.0)
        cls = jax.nn.one_hot(labels[matched], num_classes) * pos[:, None]
        return cls, box, state

    hw = valid_hw if valid_hw is not None else jnp.zeros((gt_boxes.shape[0], 2), jnp.float32)
    fn = one if valid_hw is not None else (lambda b, lab, v, _: one(b, lab, v, None))
    cls, box, state = jax.vmap(fn)(gt_boxes.astype(jnp.float32), gt_labels, gt_valid, hw)
    return {"cls": cls, "box": box, "state": state}
