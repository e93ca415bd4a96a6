"""Explain a set of examples to a folder: maps, overlays, grids, index.json, table.md/.csv.

The layout is docs/internals.md's `WORKDIR/explain/<split>/` (the split is the folder's name).
The target class of every target-dependent map and of deletion/insertion is the model's
*predicted* class. Images smaller than pad_to carry `valid` (1 on the image pixels): the model pools
over that region (when it can, `ExplainableModel.for_valid`), and maps and metrics ignore the padding.
Non-finite values never reach index.json: an example whose input, scores or maps are not finite is
flagged (`flags`), its score, prediction and the affected metrics are null, and it is not "correct".
index.json is strict JSON (no NaN tokens).
"""
from __future__ import annotations

import csv
import json
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
from cervix_jax.models.parts import with_valid
from cervix_jax.viz.overlay import write_grid, write_png

MASKS = ("lesion", "os", "tz", "cervix")          # example keys f"{name}_mask"
ALPHA = 0.4


def metric_names() -> list[str]:
    """Columns of the table, in order."""
    return (["roi_area"] + [f"pointing_game_{m}" for m in MASKS] + [f"iou_{m}" for m in MASKS]
            + ["deletion_auc", "insertion_auc"])


def _batch_fn(model, methods, threshold, auc_steps):
    def one(image, display, masks, has_masks, valid):
        m = with_valid(model, valid)
        scores = m.scores(image)
        pred = jnp.argmax(scores)
        score_fn = lambda x: m.scores(x)[pred]  # noqa: E731
        out = {"scores": scores, "maps": {}, "overlays": {}, "metrics": {}, "map_finite": {},
               "input_finite": jnp.isfinite(image).all()}
        for method in methods:
            raw = explain(method, m, image, target=pred)
            heat = postprocess.heatmap(raw, image.shape[:2], valid=valid)
            metrics = {"roi_area": faithfulness.roi_area(heat, threshold, valid)}
            for name in MASKS:
                mask = masks[name]
                has = (has_masks > 0) & (mask.sum() > 0)
                metrics[f"pointing_game_{name}"] = jnp.where(
                    has, faithfulness.pointing_game(heat, mask, valid), jnp.nan)
                metrics[f"iou_{name}"] = jnp.where(
                    has, faithfulness.iou(heat, mask, threshold, valid), jnp.nan)
            metrics["deletion_auc"] = faithfulness.deletion(score_fn, image, heat, steps=auc_steps,
                                                        valid=valid)[1]
            metrics["insertion_auc"] = faithfulness.insertion(score_fn, image, heat, steps=auc_steps,
                                                          valid=valid)[1]
            out["maps"][method] = postprocess.to_uint8(heat)
            out["overlays"][method] = postprocess.jet_overlay(display, heat, ALPHA, threshold)
            out["metrics"][method] = metrics
            out["map_finite"][method] = jnp.isfinite(raw).all()
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
    # an example's mask counts when it is given and not empty (and the example does not say has_masks=0):
    # a dataset with only a lesion mask (memory/<n>) gets lesion metrics and no others
    has = np.array([int(e.get("has_masks", 1)) for e in batch])
    ones = np.ones(images.shape[1:3], np.uint8)
    valid = np.stack([np.asarray(e.get("valid", ones), np.uint8) for e in batch])
    if valid.shape != images.shape[:3]:
        raise ValueError(f"explain_to_dir: example 'valid' must have the image's [H, W], found "
                         f"image {images.shape[1:]} and valid {valid.shape[1:]}")
    return images, display, masks, has, valid


def _json_number(x: float):
    return float(x) if math.isfinite(x) else None


def explain_to_dir(model, examples: Iterable[Mapping], out_dir: str, *,
                   methods: Sequence[str] = ("cam", "crm"), threshold: float = 0.2,
                   class_names: Optional[Sequence[str]] = None, batch_size: int = 8,
                   auc_steps: int = 16) -> dict:
    """Explains `examples` with `model` (an ExplainableModel) and writes `out_dir`.

    examples: dicts, one example each (no batch axis): `image` float32 [H, W, 3] (model input),
    `display` uint8 [H, W, 3], `label`, `id`, optional `{lesion,os,tz,cervix}_mask` uint8 [H, W],
    `has_masks` and `valid` uint8 [H, W] (1 on the image pixels of an image padded to pad_to). Methods
    the model cannot run (e.g. "cam" without a dense kernel) are dropped with a
    warning; "weights" is added when the model has a `weights` map (paper A).
    Returns the table {method: {metric: mean over examples}} (mask metrics over examples with
    masks, flagged examples left out; nan if none), also written to table.md and table.csv.
    Items of index.json carry `flags`: "nonfinite_input", "nonfinite_scores", "nonfinite_map:<method>".
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
            flags = [] if out["input_finite"][i] else ["nonfinite_input"]
            if np.isfinite(scores).all():
                pred = int(np.argmax(scores))
                score = float(scores[1] if scores.shape[0] > 1 else scores[0])
            else:   # argmax would turn NaN into class 0
                flags.append("nonfinite_scores")
                pred, score = None, None
            flags += [f"nonfinite_map:{m}" for m in methods if not out["map_finite"][m][i]]
            item = {"id": ident, "label": label, "score": score, "pred": pred,
                    "correct": pred is not None and pred == label, "image": f"images/{ident}.png",
                    "maps": {}, "overlays": {}, "metrics": {}, "flags": flags}
            if flags:
                warnings.warn(f"explain_to_dir: example {ident}: {', '.join(flags)}; its score, "
                              f"prediction and affected metrics are null in index.json")
            write_png(os.path.join(out_dir, item["image"]), np.asarray(example["display"], np.uint8))
            for m in methods:
                item["maps"][m] = f"maps/{m}/{ident}.png"
                item["overlays"][m] = f"overlays/{m}/{ident}.png"
                write_png(os.path.join(out_dir, item["maps"][m]), out["maps"][m][i])
                write_png(os.path.join(out_dir, item["overlays"][m]), out["overlays"][m][i])
                metrics = {k: float(v[i]) for k, v in out["metrics"][m].items()}
                if pred is None or not out["map_finite"][m][i]:
                    metrics = {k: math.nan for k in metrics}
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
        json.dump(index, f, indent=1, allow_nan=False)
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
