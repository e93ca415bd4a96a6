"""Contact sheet: a grid of dataset images with their mask outlines and labels (PNG)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

# Mask key -> outline colour (RGB 0..1); each a distinct hue.
MASK_COLORS = {
    "cervix_mask": (0.2, 1.0, 0.2),
    "tz_mask": (1.0, 0.9, 0.0),
    "os_mask": (0.1, 0.6, 1.0),
    "lesion_mask": (1.0, 0.1, 1.0),
    "polyp_mask": (1.0, 0.5, 0.0),
}


def contact_sheet(examples: Sequence[dict], path, ncols: int = 4, tile_inches: float = 2.4, dpi: int = 100):
    """Writes a PNG grid of `examples` (dicts with "image" uint8 [H,W,3], optional masks and
    "label", "treatability", "dysplasia", "id", "group") to `path`; returns the path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(examples)
    if n == 0:
        raise ValueError(f"contact_sheet: no examples to draw into {path}")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    h, w = np.asarray(examples[0]["image"]).shape[:2]
    figsize = (ncols * tile_inches, nrows * tile_inches * h / w + 0.4 * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, dpi=dpi)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, ex in zip(axes.ravel(), examples):
        image = np.asarray(ex["image"])
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"contact_sheet: example {ex.get('id')}: image must be [H, W, 3], "
                             f"found {image.shape}")
        ax.imshow(image, interpolation="nearest")
        for key, color in MASK_COLORS.items():
            m = np.asarray(ex.get(key, np.zeros(1)))
            if m.ndim == 2 and m.any() and not m.all():
                ax.contour(m.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.0)
        ax.set_title(_title(ex), fontsize=7)
    handles = [plt.Line2D([0], [0], color=c, lw=2, label=k.replace("_mask", ""))
               for k, c in MASK_COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def rows_sheet(rows: Sequence[tuple[str, Sequence[dict]]], path, tile_inches: float = 2.2, dpi: int = 100,
               outlines: bool = True):
    """Writes a PNG with one row per (row title, examples) pair, e.g. one row per referral reason;
    each tile shows the image (with mask outlines when `outlines`) and its id/visit/grade. Returns path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows or not any(len(exs) for _, exs in rows):
        raise ValueError(f"rows_sheet: no examples to draw into {path}")
    ncols = max(len(exs) for _, exs in rows)
    first = next(exs[0] for _, exs in rows if len(exs))
    h, w = np.asarray(first["image"]).shape[:2]
    fig, axes = plt.subplots(len(rows), ncols, squeeze=False, dpi=dpi,
                             figsize=(ncols * tile_inches + 1.6,
                                      len(rows) * (tile_inches * h / w + 0.25) + 0.4))
    for ax in axes.ravel():
        ax.axis("off")
    for r, (title, exs) in enumerate(rows):
        axes[r, 0].text(-0.08, 0.5, title, transform=axes[r, 0].transAxes, ha="right", va="center",
                        fontsize=8, wrap=True)
        for ax, ex in zip(axes[r], exs):
            ax.imshow(np.asarray(ex["image"]), interpolation="nearest")
            if outlines:
                for key, color in MASK_COLORS.items():
                    m = np.asarray(ex.get(key, np.zeros(1)))
                    if m.ndim == 2 and m.any() and not m.all():
                        ax.contour(m.astype(np.float32), levels=[0.5], colors=[color], linewidths=0.6)
            ax.set_title(" ".join(f"{k}={int(np.asarray(ex[k]))}" for k in ("id", "visit", "cin_grade")
                                  if k in ex), fontsize=6)
    if outlines:
        handles = [plt.Line2D([0], [0], color=c, lw=2, label=k.replace("_mask", ""))
                   for k, c in MASK_COLORS.items()]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0.1, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def _title(ex: dict) -> str:
    parts = [f"{k}={int(np.asarray(ex[k]))}" for k in ("id", "group", "label") if k in ex]
    extra = [f"{k[:5]}={int(np.asarray(ex[k]))}" for k in ("treatability", "dysplasia") if k in ex]
    return " ".join(parts) + ("\n" + " ".join(extra) if extra else "")
