"""Explain a set of examples to a folder: maps, overlays, grids, index.json, table.md/.csv.

The layout is docs/internals.md's `WORKDIR/explain/<split>/` (the split is the folder's name).
The target class of every target-dependent map and of deletion/insertion is the model's
*predicted* class.
"""
from __future__ import annotations

import csv
import math
import os
import warnings
from typing import Iterable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from cervix_jax.explain import faithfulness, postprocess
from cervix_jax.explain.registry import explain, supports
from cervix_jax.jsonsafe import dumps
from cervix_jax.viz.overlay import write_grid, write_png

MASKS = ("lesion", "os", "tz", "cervix")          # example keys f"{name}_mask"
ALPHA = 0.4


def metric_names() -> list[str]:
    """Columns of the table, in order."""
    return (["roi_area"] + [f"pointing_game_{m}" for m in MASKS] + [f"iou_{m}" for m in MASKS]
            + ["deletion_auc", "insertion_auc"])


def _batch_fn(model, methods, threshold, auc_steps):
    def one(image, display, masks, has_masks):
        scores = model.scores(image)
        pred = jnp.argmax(scores)
        score_fn = lambda x: model.scores(x)[pred]  # noqa: E731
        out = {"scores": scores, "maps": {}, "overlays": {}, "metrics": {}}
        for method in methods:
            heat = postprocess.heatmap(explain(method, model, image, target=pred), image.shape[:2])
            metrics = {"roi_area": faithfulness.roi_area(heat, threshold)}
            for name in MASKS:
                mask = masks[name]
                valid = (has_masks > 0) & (mask.sum() > 0)
                metrics[f"pointing_game_{name}"] = jnp.where(
                    valid, faithfulness.pointing_game(heat, mask), jnp.nan)
                metrics[f"iou_{name}"] = jnp.where(valid, faithfulness.iou(heat, mask, threshold), jnp.nan)
            metrics["deletion_auc"] = faithfulness.deletion(score_fn, image, heat, steps=auc_steps)[1]
            metrics["insertion_auc"] = faithfulness.insertion(score_fn, image, heat, steps=auc_steps)[1]
            out["maps"][method] = postprocess.to_uint8(heat)
            out["overlays"][method] = postprocess.jet_overlay(display, heat, ALPHA, threshold)
            out["metrics"][method] = metrics
        return out

    return jax.jit(jax.vmap(one))


def _stack(batch: list[dict], size: int):
    batch = batch + [batch[-1]] * (size - len(batch))               # pad: one compiled shape
    images = np.stack([np.asarray(e["image"], np.float32) for e in batch])
    display = np.stack([np.asarray(e["display"], np.uint8) for e in batch])
    if images.shape[:3] != display.shape[:3]:
        raise ValueError(f"explain_to_dir: example 'display' must have the image's [H, W], found "
                         f"image {images.shape[1:]} and display {display.shape[1:]}")
    zeros = np.zeros(images.shape[:3], np.uint8)
    masks = {m: np.stack([np.asarray(e.get(f"{m}_mask", zeros[0]), np.uint8) for e in batch])
             for m in MASKS}
    has = np.array([int(e.get("has_masks", all(f"{m}_mask" in e for m in MASKS))) for e in batch])
    return images, display, masks, has


def _json_number(x: float):
    return None if math.isnan(x) else float(x)


def explain_to_dir(model, examples: Iterable[Mapping], out_dir: str, *,
                   methods: Sequence[str] = ("cam", "crm"), threshold: float = 0.2,
                   class_names: Optional[Sequence[str]] = None, batch_size: int = 8,
                   auc_steps: int = 16) -> dict:
    """Explains `examples` with `model` (an ExplainableModel) and writes `out_dir`.

    examples: dicts, one example each (no batch axis): `image` float32 [H, W, 3] (model input),
    `display` uint8 [H, W, 3], `label`, `id`, optional `{lesion,os,tz,cervix}_mask` uint8 [H, W] and
    `has_masks`. Methods the model cannot run (e.g. "cam" without a dense kernel) are dropped with a
    warning; "weights" is added when the model has a `weights` map (paper A).
    Returns the table {method: {metric: mean over examples}} (mask metrics over examples with
    masks; nan if none), also written to table.md and table.csv.
    """
    class_names = tuple(class_names or model.class_names)
    methods = list(methods) + (["weights"] if model.weights is not None and "weights" not in methods else [])
    dropped = [m for m in methods if not supports(m, model)]
    if dropped:
        warnings.warn(f"explain_to_dir: the model cannot run {dropped} (missing ExplainableModel "
                      f"fields); skipped")
    methods = [m for m in methods if m not in dropped]
    fn = _batch_fn(model, tuple(methods), threshold, auc_steps)
    items, values = [], {m: {k: [] for k in metric_names()} for m in methods}
    batch, n_grid = [], 0

    def flush():
        nonlocal n_grid
        out = jax.device_get(fn(*_stack(batch, batch_size)))
        for i, example in enumerate(batch):
            ident, label = int(example["id"]), int(example["label"])
            scores = out["scores"][i]
            # a NaN score is no class: argmax(NaN) would say class 0 (and "correct" for label 0)
            pred = int(np.argmax(scores)) if np.isfinite(scores).all() else None
            score = float(scores[1] if scores.shape[0] > 1 else scores[0])
            item = {"id": ident, "label": label, "score": score, "pred": pred,
                    "correct": pred is not None and pred == label, "image": f"images/{ident}.png",
                    "maps": {}, "overlays": {}, "metrics": {}}
            if pred is None:
                item["flags"] = ["non-finite scores"]
            write_png(os.path.join(out_dir, item["image"]), np.asarray(example["display"], np.uint8))
            for m in methods:
                item["maps"][m] = f"maps/{m}/{ident}.png"
                item["overlays"][m] = f"overlays/{m}/{ident}.png"
                write_png(os.path.join(out_dir, item["maps"][m]), out["maps"][m][i])
                write_png(os.path.join(out_dir, item["overlays"][m]), out["overlays"][m][i])
                metrics = {k: float(v[i]) for k, v in out["metrics"][m].items()}
                for k, v in metrics.items():
                    values[m][k].append(v)
                item["metrics"][m] = {k: _json_number(v) for k, v in metrics.items()}
            items.append(item)
        columns = {"image": np.stack([np.asarray(e["display"], np.uint8) for e in batch])}
        columns.update({m: out["overlays"][m][:len(batch)] for m in methods})
        write_grid(os.path.join(out_dir, f"grid_{n_grid}.png"), columns)
        n_grid += 1
        batch.clear()

    for example in tqdm(examples, desc="explain", unit="example"):
        bad = int(np.size(example["image"]) - np.isfinite(np.asarray(example["image"], np.float32)).sum())
        if bad:
            raise ValueError(f"explain_to_dir: example id {example.get('id')} has {bad} non-finite input "
                             f"values (NaN or inf) in 'image': refusing to explain it (its scores and maps "
                             f"would be meaningless)")
        batch.append(example)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not items:
        raise ValueError("explain_to_dir: `examples` is empty")

    table = {m: {k: (float(np.nanmean(v)) if np.isfinite(v).any() else math.nan)
                 for k, v in values[m].items()} for m in methods}
    index = {"split": os.path.basename(os.path.normpath(out_dir)), "methods": methods,
             "threshold": threshold, "class_names": list(class_names), "items": items}
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        f.write(dumps(index, indent=1))       # strict JSON: a NaN would break the review page
    _write_table(out_dir, table)
    return table


def _write_table(out_dir: str, table: dict) -> None:
    names = metric_names()
    with open(os.path.join(out_dir, "table.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method"] + names)
        for m, row in table.items():
            writer.writerow([m] + [f"{row[k]:.6g}" for k in names])
    lines = ["| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += ["| " + m + " | " + " | ".join(f"{row[k]:.4f}" for k in names) + " |"
              for m, row in table.items()]
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
