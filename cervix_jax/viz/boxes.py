"""Detection overlays: ground-truth and detected boxes drawn on images, as PNG."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from cervix_jax.viz.overlay import write_png

GT_COLOUR = (0, 220, 0)
DET_COLOURS = ((255, 200, 0), (255, 40, 40))     # by class: treatable, not treatable


def draw_boxes(image, gt_box=None, detections: dict | None = None, *, class_names: Sequence[str] = (),
               max_boxes: int = 3) -> np.ndarray:
    """uint8 [H, W, 3] -> a copy with the ground-truth box (green) and the `max_boxes` best detections
    (yellow: class 0, red: class 1; the best one thicker) with their class and score."""
    img = Image.fromarray(np.asarray(image, np.uint8).copy())
    draw = ImageDraw.Draw(img)
    if gt_box is not None:
        draw.rectangle([float(v) for v in gt_box], outline=GT_COLOUR, width=1)
    if detections is not None:
        for i in reversed(range(min(max_boxes, len(detections["scores"])))):
            label = int(detections["labels"][i])
            colour = DET_COLOURS[label % len(DET_COLOURS)]
            box = [float(v) for v in detections["boxes"][i]]
            draw.rectangle(box, outline=colour, width=2 if i == 0 else 1)
            name = class_names[label] if label < len(class_names) else str(label)
            draw.text((box[0] + 2, box[1] + 1), f"{name} {float(detections['scores'][i]):.2f}", fill=colour)
    return np.asarray(img)


def write_detection_overlays(path: str, images, gt_boxes, detections: Sequence[dict], *,
                             class_names: Sequence[str] = (), ncols: int = 4, pad: int = 4) -> None:
    """A grid PNG of `draw_boxes` for a batch: images uint8 [b, H, W, 3], gt_boxes [b, 4]."""
    tiles = [draw_boxes(im, gt, det, class_names=class_names)
             for im, gt, det in zip(images, gt_boxes, detections)]
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // ncols)
    out = np.full((rows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = t
    write_png(path, out)
