"""Binary classification metrics in NumPy (checked against scikit-learn in tests/test_metrics.py).

Conventions: label 1 is the positive (minority/referral) class; a score s is predicted positive
iff s >= threshold; ratios with a zero denominator are 0 (scikit-learn's `zero_division=0`);
threshold-free metrics (auc, one_minus_eer) are nan when `labels` hold a single class.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def _as_inputs(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"metrics: expected scores [N] and labels [N], got {scores.shape} and "
                         f"{labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"metrics: labels must be 0/1, found values {np.unique(labels)[:10].tolist()}")
    if not np.isfinite(scores).all():
        raise ValueError(f"metrics: {int((~np.isfinite(scores)).sum())} scores are not finite")
    return scores, labels.astype(np.int64)


def _ratio(num, den) -> float:
    return float(num / den) if den > 0 else 0.0


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, thresholds decreasing from +inf.

    Vertex k predicts positive iff score >= thresholds[k]; the first vertex is (0, 0). No vertex is
    dropped. fpr (tpr) is nan when there are no negatives (positives).
    """
    scores, labels = _as_inputs(scores, labels)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.r_[0, np.cumsum(y)[last]]
    fp = np.r_[0, (last + 1) - tp[1:]]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tp / tp[-1]
        fpr = fp / fp[-1]
    return fpr, tpr, np.r_[np.inf, s[last]]


def auc(scores, labels) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted as half; nan for one class."""
    scores, labels = _as_inputs(scores, labels)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2  # 1-based mean rank of each distinct score
    rank_sum = average_rank[inverse][labels == 1].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def equal_error_rate(scores, labels) -> float:
    """The rate where the ROC polyline crosses fnr = fpr (exact linear interpolation); nan for one class."""
    fpr, tpr, _ = roc_curve(scores, labels)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan")
    d = (1 - tpr) - fpr  # non-increasing from 1 to -1 along the curve
    i = int(np.argmax(d <= 0))
    if d[i] == 0:
        return float(fpr[i])
    t = d[i - 1] / (d[i - 1] - d[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def confusion(scores, labels, threshold: float = 0.5) -> np.ndarray:
    """int64 [[tn, fp], [fn, tp]] with predictions scores >= threshold."""
    scores, labels = _as_inputs(scores, labels)
    pred = scores >= threshold
    pos = labels == 1
    return np.array([[np.sum(~pos & ~pred), np.sum(~pos & pred)],
                     [np.sum(pos & ~pred), np.sum(pos & pred)]], np.int64)


def binary_metrics(scores, labels, threshold: float = 0.5) -> dict:
    """Thresholded and threshold-free metrics of P(class 1) `scores` [N] against 0/1 `labels` [N].

    Keys: accuracy, balanced_accuracy (mean recall over the classes present in labels, as
    scikit-learn), precision, recall (sensitivity), specificity, f1, auc, one_minus_eer,
    confusion ([[tn, fp], [fn, tp]], ints), threshold, n. Values are plain Python numbers (JSON-ready).
    """
    (tn, fp), (fn, tp) = confusion(scores, labels, threshold).tolist()
    n = tn + fp + fn + tp
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    present = [r for r, count in ((recall, tp + fn), (specificity, tn + fp)) if count > 0]
    eer = equal_error_rate(scores, labels)
    return {
        "accuracy": _ratio(tp + tn, n),
        "balanced_accuracy": float(np.mean(present)) if present else 0.0,
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "specificity": specificity,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": auc(scores, labels),
        "one_minus_eer": 1.0 - eer,
        "confusion": [[tn, fp], [fn, tp]],
        "threshold": float(threshold),
        "n": n,
    }


def choose_threshold(scores, labels, criterion: str = "youden") -> float:
    """The threshold maximising `criterion` on these (validation) scores; never call it on test.

    criterion: "youden" (tpr - fpr, i.e. balanced accuracy) or "f1". Candidates are the distinct
    scores; the winner (the highest threshold among ties) is moved halfway down to the next lower
    distinct score, which keeps the same predictions here and is less brittle on new data.
    """
    scores, labels = _as_inputs(scores, labels)
    if labels.min() == labels.max():
        raise ValueError(f"choose_threshold: labels hold a single class ({labels[0]}); need both")
    fpr, tpr, thresholds = roc_curve(scores, labels)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]  # finite thresholds only
    if criterion == "youden":
        value = tpr - fpr
    elif criterion == "f1":
        n_pos = labels.sum()
        tp, fp = tpr * n_pos, fpr * (labels.size - n_pos)
        value = 2 * tp / (tp + fp + n_pos)
    else:
        raise ValueError(f"choose_threshold: criterion must be 'youden' or 'f1', got {criterion!r}")
    k = int(np.argmax(value))
    if k + 1 < thresholds.size:
        return float((thresholds[k] + thresholds[k + 1]) / 2)
    return float(thresholds[k])


def _check_groups(groups, labels) -> None:
    if np.shape(groups) != labels.shape:
        raise ValueError(f"bootstrap: expected groups of shape {labels.shape}, got {np.shape(groups)}")


def _group_members(groups) -> list[np.ndarray]:
    groups = np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse))[:-1])


def _group_resamples(groups, n_boot: int, seed: int):
    """Yields index arrays, each a resample with replacement of whole groups."""
    members = _group_members(groups)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        pick = rng.integers(0, len(members), len(members))
        yield np.concatenate([members[g] for g in pick])


def _interval(estimate: float, values: list[float], alpha: float) -> dict:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        low = high = float("nan")
    else:
        low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return {"estimate": float(estimate), "low": float(low), "high": float(high), "n_boot": int(values.size)}


def bootstrap_ci(metric_fn: Callable[[np.ndarray, np.ndarray], float], scores, labels, groups, *,
                 n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Percentile (1 - alpha) interval of metric_fn(scores, labels), resampling whole groups.

    Returns {"estimate" (on all data), "low", "high", "n_boot" (resamples with a finite metric;
    the others, e.g. single-class resamples for AUC, are left out)}.
    """
    scores, labels = _as_inputs(scores, labels)
    _check_groups(groups, labels)
    values = [metric_fn(scores[i], labels[i]) for i in _group_resamples(groups, n_boot, seed)]
    return _interval(metric_fn(scores, labels), values, alpha)


def paired_bootstrap_diff(metric_fn: Callable[[np.ndarray, np.ndarray], float], scores_a, scores_b,
                          labels, groups, *, n_boot: int = 1000, seed: int = 0,
                          alpha: float = 0.05) -> dict:
    """Interval of metric(a) - metric(b) for two models scored on the same examples, with the same
    group resample applied to both. "a clearly beats b" when low > 0. Same keys as `bootstrap_ci`."""
    scores_a, labels = _as_inputs(scores_a, labels)
    scores_b, _ = _as_inputs(scores_b, labels)
    _check_groups(groups, labels)
    values = [metric_fn(scores_a[i], labels[i]) - metric_fn(scores_b[i], labels[i])
              for i in _group_resamples(groups, n_boot, seed)]
    return _interval(metric_fn(scores_a, labels) - metric_fn(scores_b, labels), values, alpha)


def _hierarchical_resamples(members: list, n_boot: int, seed: int):
    """Yields, per resample, [(run, index array)]: runs drawn with replacement, then inside every drawn
    run its groups (women) with replacement. `members`: per run, its groups' example indices."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        runs = rng.integers(0, len(members), len(members))
        yield [(r, np.concatenate([members[r][g] for g in rng.integers(0, len(members[r]), len(members[r]))]))
               for r in runs]


def hierarchical_bootstrap_diff(diffs, groups, *, n_boot: int = 2000, seed: int = 0,
                                alpha: float = 0.05) -> dict:
    """Interval of the mean paired difference over runs, resampling runs AND women.

    diffs: one array per run (seed x split) of per-image differences a - b (both arms scored on that
    run's test images); groups: the matching per-image group (woman) ids. Each resample draws runs
    with replacement, then, inside every drawn run, its women with replacement; the statistic is the
    mean over the drawn runs of each run's mean difference. So the interval carries run-to-run
    variance (a per-image bootstrap of seed-averaged maps does not). Estimate: the mean over runs of
    the per-run means. Same keys as `bootstrap_ci`, plus "per_run" (each run's mean difference).
    """
    diffs = [np.asarray(d, np.float64) for d in diffs]
    if len(diffs) != len(groups) or not diffs:
        raise ValueError(f"hierarchical_bootstrap_diff: expected one groups array per run, got "
                         f"{len(diffs)} runs and {len(groups)} group arrays")
    members = []
    for d, g in zip(diffs, groups):
        if np.shape(g) != d.shape:
            raise ValueError(f"hierarchical_bootstrap_diff: groups of shape {np.shape(g)} for "
                             f"differences of shape {d.shape}")
        members.append(_group_members(g))
    per_run = np.array([d.mean() for d in diffs])
    values = [np.mean([diffs[r][i].mean() for r, i in draw])
              for draw in _hierarchical_resamples(members, n_boot, seed)]
    out = _interval(float(per_run.mean()), values, alpha)
    out["per_run"] = per_run.tolist()
    return out


def hierarchical_bootstrap_ci(metric_fn: Callable[[np.ndarray, np.ndarray], float], runs, *,
                              n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Interval of the mean over runs of an image-level metric (AUC, accuracy at a fixed threshold...),
    resampling runs AND, inside every drawn run, its women.

    runs: one tuple per run (seed x split, each scored on its own test women): (scores, labels, groups)
    for metric(scores, labels), or (scores_a, scores_b, labels, groups) for the paired difference
    metric(a) - metric(b) (the same women resample for both arms). The statistic of a resample is the
    mean over the drawn runs of each run's metric on its resampled women; resamples where the metric is
    not finite (e.g. AUC of a one-class draw) are left out (`n_boot` counts the rest). Estimate: the
    mean over runs of the per-run metric. Same keys as `bootstrap_ci`, plus "per_run".
    """
    if not runs:
        raise ValueError("hierarchical_bootstrap_ci: expected at least one run, got none")
    arms, members = [], []
    for k, run in enumerate(runs):
        if len(run) not in (3, 4):
            raise ValueError(f"hierarchical_bootstrap_ci: run {k}: expected (scores, labels, groups) or "
                             f"(scores_a, scores_b, labels, groups), got a tuple of {len(run)}")
        *scores, labels, groups = run
        pairs = [_as_inputs(s, labels) for s in scores]
        _check_groups(groups, pairs[0][1])
        arms.append(([p[0] for p in pairs], pairs[0][1]))
        members.append(_group_members(groups))

    def stat(r, idx=None):
        scores, labels = arms[r]
        idx = np.arange(labels.size) if idx is None else idx
        values = [metric_fn(s[idx], labels[idx]) for s in scores]
        return values[0] if len(values) == 1 else values[0] - values[1]

    per_run = np.array([stat(r) for r in range(len(runs))], np.float64)
    values = [np.mean([stat(r, i) for r, i in draw])
              for draw in _hierarchical_resamples(members, n_boot, seed)]
    out = _interval(float(per_run.mean()), values, alpha)
    out["per_run"] = per_run.tolist()
    return out
