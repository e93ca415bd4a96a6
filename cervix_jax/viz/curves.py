"""ROC curve, score distributions and training curves as PNG files (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def roc_png(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path) -> Path:
    """One ROC line per name: curves[name] = (fpr, tpr, auc)."""
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=110)
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="gray", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
           title="ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def scores_png(scores: np.ndarray, labels: np.ndarray, path, *, thresholds: dict[str, float],
               class_names: tuple[str, str] = ("negative", "positive")) -> Path:
    """Histograms of P(class 1) per true class, with vertical lines at the named thresholds."""
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
    bins = np.linspace(0, 1, 26)
    for c, name in enumerate(class_names):
        ax.hist(scores[labels == c], bins=bins, alpha=0.6, label=f"{name} (n={int((labels == c).sum())})")
    for i, (name, t) in enumerate(thresholds.items()):
        ax.axvline(t, c=f"C{i + 2}", ls="--", lw=1, label=f"{name} = {t:.3f}")
    ax.set(xlabel="score P(class 1)", ylabel="images", title="score distribution")
    ax.legend(fontsize=7)
    return _save(fig, path)


def training_curves_png(rows: list[dict], path, *, keys: Optional[tuple[str, ...]] = None) -> Path:
    """Train loss and every scalar val_* metric of a run's metric rows (`rundir.read_metrics`)
    against step."""
    train = [r for r in rows if r.get("split") == "train"]
    val = [r for r in rows if r.get("split") == "val"]
    keys = keys or tuple(k for k in ("val_auc", "val_accuracy", "val_f1") if val and k in val[0])
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=110)
    a.plot([r["step"] for r in train], [r["loss"] for r in train])
    a.set(xlabel="step", ylabel="train loss", title="training loss")
    for k in keys:
        b.plot([r["step"] for r in val], [r[k] for r in val], marker="o", label=k)
    b.set(xlabel="step", title="validation")
    if keys:
        b.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
