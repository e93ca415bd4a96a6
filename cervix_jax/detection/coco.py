"""COCO box AP in NumPy, equal to pycocotools' COCOeval (bbox) stats[0..2]: AP, AP50, AP75.

Setting: every ground-truth box counts (iscrowd 0, area = w * h, area range "all"), at most 100
detections per image and class (highest scores first), IoU thresholds 0.50:0.05:0.95, precision
sampled at 101 recall points after the monotone envelope, averaged over thresholds and over the classes
that have ground truth. Ties in score keep the input order (pycocotools' mergesort), first within an
image, then across images in image order. Boxes are (x1, y1, x2, y2); IoU is computed from (x, y, w, h)
like pycocotools' `bbIou`, and must not be inverted (x1 <= x2, y1 <= y2; `coco_ap` raises otherwise):
pycocotools silently ignores an unmatched detection of negative area, which this module does not replicate.
"""
from __future__ import annotations

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETS = 100


def _xywh(boxes) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def _bb_iou(dt, gt) -> np.ndarray:
    """[D, 4] x [G, 4] xywh -> IoU [D, G] as pycocotools' bbIou (no crowd)."""
    w = np.minimum(dt[:, None, 0] + dt[:, None, 2], gt[None, :, 0] + gt[None, :, 2]) - \
        np.maximum(dt[:, None, 0], gt[None, :, 0])
    h = np.minimum(dt[:, None, 1] + dt[:, None, 3], gt[None, :, 1] + gt[None, :, 3]) - \
        np.maximum(dt[:, None, 1], gt[None, :, 1])
    inter = w * h
    union = (dt[:, 2] * dt[:, 3])[:, None] + (gt[:, 2] * gt[:, 3])[None, :] - inter
    ok = (w > 0) & (h > 0)
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def _match(ious: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy matching of score-sorted detections [D] to ground truth [G]: matched flags [D]."""
    n_dt, n_gt = ious.shape
    taken = np.zeros(n_gt, bool)
    matched = np.zeros(n_dt, bool)
    for d in range(n_dt):
        best, m = min(threshold, 1 - 1e-10), -1
        for g in range(n_gt):
            if taken[g] or ious[d, g] < best:
                continue
            best, m = ious[d, g], g
        if m >= 0:
            taken[m] = matched[d] = True
    return matched


def _precision_at_recalls(tp_flags: np.ndarray, n_gt: int) -> np.ndarray:
    """tp flags of score-sorted detections -> precision at the 101 recall points (pycocotools)."""
    tp = np.cumsum(tp_flags).astype(float)
    fp = np.cumsum(~tp_flags).astype(float)
    rc = tp / n_gt
    pr = (tp / (fp + tp + np.spacing(1))).tolist()
    for i in range(len(pr) - 1, 0, -1):
        pr[i - 1] = max(pr[i - 1], pr[i])
    q = np.zeros(len(RECALL_POINTS))
    for ri, pi in enumerate(np.searchsorted(rc, RECALL_POINTS, side="left")):
        if pi >= len(pr):
            break
        q[ri] = pr[pi]
    return q


def coco_ap(detections, ground_truth) -> dict:
    """detections: list over images of {"boxes": [k, 4], "scores": [k], "labels": [k]};
    ground_truth: list over images of {"boxes": [m, 4], "labels": [m]} -> {"AP", "AP50", "AP75"}
    (-1 when no image has a ground-truth box, as pycocotools)."""
    if len(detections) != len(ground_truth):
        raise ValueError(f"coco_ap: {len(detections)} detection entries for {len(ground_truth)} images")
    for what, entries in (("detections", detections), ("ground_truth", ground_truth)):
        for i, e in enumerate(entries):
            b = np.asarray(e["boxes"], np.float64).reshape(-1, 4)
            bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
            if bad.any():
                raise ValueError(f"coco_ap: {what}[{i}]['boxes'][{int(np.argmax(bad))}] = "
                                 f"{b[bad][0].tolist()}: expected (x1, y1, x2, y2) with x1 <= x2, y1 <= y2")
    gt_labels = [np.asarray(g["labels"]).reshape(-1) for g in ground_truth]
    classes = np.unique(np.concatenate(gt_labels)) if gt_labels else np.zeros(0)
    precision = -np.ones((len(IOU_THRESHOLDS), len(RECALL_POINTS), len(classes)))
    for k, c in enumerate(classes):
        scores, flags, n_gt = [], [], 0
        for det, gt, gl in zip(detections, ground_truth, gt_labels):
            g = _xywh(gt["boxes"])[gl == c]
            dl = np.asarray(det["labels"]).reshape(-1)
            d = _xywh(det["boxes"])[dl == c]
            s = np.asarray(det["scores"], np.float64).reshape(-1)[dl == c]
            order = np.argsort(-s, kind="mergesort")[:MAX_DETS]
            d, s = d[order], s[order]
            n_gt += len(g)
            ious = _bb_iou(d, g) if len(g) and len(d) else np.zeros((len(d), len(g)))
            flags.append(np.stack([_match(ious, t) for t in IOU_THRESHOLDS]) if len(g) and len(d)
                         else np.zeros((len(IOU_THRESHOLDS), len(d)), bool))
            scores.append(s)
        if n_gt == 0:
            continue
        s = np.concatenate(scores)
        order = np.argsort(-s, kind="mergesort")
        tp = np.concatenate(flags, axis=1)[:, order]
        for t in range(len(IOU_THRESHOLDS)):
            precision[t, :, k] = _precision_at_recalls(tp[t], n_gt)

    def mean(p):
        p = p[p > -1]
        return float(p.mean()) if p.size else -1.0

    return {"AP": mean(precision), "AP50": mean(precision[0]), "AP75": mean(precision[5])}
