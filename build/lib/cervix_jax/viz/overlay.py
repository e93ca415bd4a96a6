"""PNG writing and image | heatmap grids for a whole batch in one call."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw


def write_png(path: str, array) -> None:
    """Writes uint8 [H, W] (grayscale) or [H, W, 3] (RGB) to `path`, creating its folder."""
    a = np.asarray(array)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3):
        raise ValueError(f"write_png({path}): expected uint8 [H, W] or [H, W, 3], found "
                         f"{a.dtype} {a.shape}")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    Image.fromarray(a).save(path)


def _rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, axis=-1) if a.ndim == 3 else a


def grid(columns: Sequence, titles: Sequence[str] = (), pad: int = 4) -> np.ndarray:
    """One picture of a batch: row i = example i, column j = columns[j][i].

    columns: uint8 arrays [b, H, W, 3] or [b, H, W] (same b, H, W); titles: optional header text
    per column. White padding of `pad` pixels. -> uint8 [rows, cols, 3].
    """
    cols = [_rgb(np.asarray(c)) for c in columns]
    b, h, w, _ = cols[0].shape
    for j, c in enumerate(cols):
        if c.shape != (b, h, w, 3) or c.dtype != np.uint8:
            raise ValueError(f"grid: column {j} must be uint8 {(b, h, w)}(+3), found {c.dtype} {c.shape}")
    header = 14 if titles else 0
    out = np.full((header + b * (h + pad) + pad, len(cols) * (w + pad) + pad, 3), 255, np.uint8)
    for j, c in enumerate(cols):
        x = pad + j * (w + pad)
        for i in range(b):
            y = header + pad + i * (h + pad)
            out[y:y + h, x:x + w] = c[i]
    if titles:
        picture = Image.fromarray(out)
        draw = ImageDraw.Draw(picture)
        for j, title in enumerate(titles):
            draw.text((pad + j * (w + pad), 1), str(title), fill=(0, 0, 0))
        out = np.asarray(picture)
    return out


def write_grid(path: str, columns: Mapping[str, object], pad: int = 4) -> None:
    """Writes `grid(columns.values(), titles=columns.keys())` as a PNG."""
    write_png(path, grid(list(columns.values()), titles=list(columns.keys()), pad=pad))
