"""Paper A's Fig. 5 d-g: a few training images with their Gaussian regulator at several epochs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402


def ellipse_params(mu, cov, patch_size: int,
                   n_std: float = 2.0) -> tuple[tuple[float, float], float, float, float]:
    """A regulator in patch units -> ((x, y) px, width px, height px, angle deg) of its n_std ellipse.

    Patch (i, j) covers pixels [j p, (j + 1) p), so grid position x maps to pixel (x + 0.5) p.
    """
    mu, cov = np.asarray(mu, np.float64), np.asarray(cov, np.float64)
    evals, evecs = np.linalg.eigh(cov)
    evals = np.maximum(evals, 0.0)
    angle = np.degrees(np.arctan2(evecs[1, 1], evecs[0, 1]))        # major axis direction
    w, h = 2 * n_std * np.sqrt(evals[1]) * patch_size, 2 * n_std * np.sqrt(evals[0]) * patch_size
    return ((mu[0] + 0.5) * patch_size, (mu[1] + 0.5) * patch_size), w, h, angle


def plot_regulator_evolution(images: np.ndarray, history: Sequence[tuple[int, np.ndarray, np.ndarray]],
                             patch_size: int, path: str | Path, *,
                             true_centers: Optional[np.ndarray] = None,
                             masks: Optional[np.ndarray] = None) -> Path:
    """Writes a PNG: one panel per image with its regulator's 2-std ellipse at each recorded epoch.

    images [n, H, W, 3] (uint8, or float in 0..1); history = [(epoch, mu [n, 2], cov [n, 2, 2]), ...]
    in patch units; true_centers [n, 2] pixels (x, y) marked with a cross; masks [n, H, W] contoured.
    """
    images = np.asarray(images)
    n = images.shape[0]
    if not history:
        raise ValueError("plot_regulator_evolution: history is empty; expected [(epoch, mu, cov), ...]")
    for epoch, mu, cov in history:
        if np.shape(mu) != (n, 2) or np.shape(cov) != (n, 2, 2):
            raise ValueError(f"plot_regulator_evolution: epoch {epoch}: expected mu [{n}, 2] and cov "
                             f"[{n}, 2, 2], found {np.shape(mu)} and {np.shape(cov)}")
    colors = plt.cm.viridis(np.linspace(0, 1, len(history)))
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2 * images.shape[1] / images.shape[2] + 0.6),
                             squeeze=False)
    for k, ax in enumerate(axes[0]):
        img = images[k]
        ax.imshow(img if img.dtype == np.uint8 else np.clip(img, 0, 1))
        if masks is not None:
            ax.contour(np.asarray(masks[k]) > 0, levels=[0.5], colors="white", linewidths=0.8)
        for (epoch, mu, cov), color in zip(history, colors):
            xy, w, h, angle = ellipse_params(mu[k], cov[k], patch_size)
            ax.add_patch(Ellipse(xy, w, h, angle=angle, fill=False, color=color, lw=1.5,
                                 label=f"epoch {epoch}" if k == 0 else None))
            ax.plot(*xy, "o", color=color, ms=3)
        if true_centers is not None:
            ax.plot(*np.asarray(true_centers[k]), "x", color="red", ms=8, mew=2)
        ax.set_xlim(0, img.shape[1])
        ax.set_ylim(img.shape[0], 0)
        ax.set_axis_off()
    fig.legend(loc="lower center", ncol=min(len(history), 6), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
