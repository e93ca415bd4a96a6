"""Host-side (NumPy) detection post-processing: greedy NMS, per-class NMS, and RetinaNet detections.

`detections_from_outputs` follows torchvision's RetinaNet `postprocess_detections` in spirit: per class
sigmoid scores above `score_threshold`, the `candidates` best (anchor, class) pairs, boxes decoded and
clipped to the image, per-class NMS at `nms_iou`, at most `max_detections` kept, by score.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cervix_jax.detection import boxes as box_ops


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, by decreasing score (ties: lower index first). A box is removed
    when its IoU with a kept, higher-scoring box is > iou_threshold."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        iou = box_ops.box_iou(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def batched_nms(boxes, scores, labels, iou_threshold: float) -> np.ndarray:
    """NMS within each label; kept indices sorted by decreasing score."""
    labels = np.asarray(labels).reshape(-1)
    keep = [np.flatnonzero(labels == c)[nms(np.asarray(boxes)[labels == c],
                                            np.asarray(scores)[labels == c], iou_threshold)]
            for c in np.unique(labels)]
    keep = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return keep[np.argsort(-np.asarray(scores)[keep], kind="stable")]


def detections_from_outputs(cls_logits, box_deltas, anchors, *, box_style: str, image_hw=None,
                            score_threshold: float = 0.05, candidates: int = 1000, nms_iou: float = 0.5,
                            max_detections: int = 100) -> dict:
    """One image: cls_logits [A, C], box_deltas [A, 4], anchors [A, 4] ->
    {"boxes": [k, 4], "scores": [k], "labels": [k]} (NumPy), k <= max_detections."""
    logits = np.asarray(cls_logits, np.float64)
    scores = 1.0 / (1.0 + np.exp(-logits))                   # [A, C]
    flat = scores.reshape(-1)
    idx = np.flatnonzero(flat > score_threshold)
    idx = idx[np.argsort(-flat[idx], kind="stable")][:candidates]
    anchor_idx, labels = np.divmod(idx, scores.shape[1])
    boxes = box_ops.decode_boxes(np.asarray(anchors, np.float64)[anchor_idx],
                                 np.asarray(box_deltas, np.float64)[anchor_idx], style=box_style)
    if image_hw is not None:
        boxes = box_ops.clip_boxes(boxes, image_hw)
    keep = batched_nms(boxes, flat[idx], labels, nms_iou)[:max_detections]
    return {"boxes": boxes[keep].astype(np.float32), "scores": flat[idx][keep].astype(np.float32),
            "labels": labels[keep].astype(np.int64)}


SCORE_RULES = ("top_anchor", "max_class", "ratio")


def image_scores(cls_logits, rule: str = "top_anchor"):
    """Image-level probability of class 1 ("not treatable") from a detector's logits [B, A, C] (jnp).

    "top_anchor"  the class-1 probability of the top-scoring anchor (the anchor whose best class
                  probability is highest): the label and score of the image's top detection, which
                  is how a detector that finds one cervix per image classifies it (NMS never
                  removes the top box, so no NMS is needed). Default.
    "max_class"   max over anchors of the class-1 probability (the best "not treatable" detection,
                  wherever the top detection is).
    "ratio"       s_1 / (s_0 + s_1) with s_c = max over anchors of the class-c probability.
    """
    if rule not in SCORE_RULES:
        raise ValueError(f"image_scores: rule expected one of {SCORE_RULES}, found {rule!r}")
    p = jax.nn.sigmoid(jnp.asarray(cls_logits, jnp.float32))
    if rule == "top_anchor":
        top = jnp.argmax(p.max(axis=-1), axis=-1)
        return jnp.take_along_axis(p[..., 1], top[:, None], axis=1)[:, 0]
    s = p.max(axis=1)
    if rule == "max_class":
        return s[:, 1]
    return s[:, 1] / jnp.maximum(s[:, 0] + s[:, 1], 1e-12)
