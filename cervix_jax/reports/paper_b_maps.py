"""Paper B's CAM vs CRM per head (Figs. 4-8, Section 4.3) on a pyramid sweep's points.

Reads a sweep of paper B's heads (`model.levels` x `seed` x `data.blur`, configs/pyramid.py:sweep) and,
for the first seed of the grid, every head and every blur level, explains the test images with
`config.explain.methods` (paper B's config: "cam", "crm_linear" = CRM in the Eq. (1) space,
"crm" = CRM of the softmax outputs). The backbone is the same frozen network for every point, so its
pyramid maps are computed once per blur level and every head's map is taken from them (the same
`explain` registry and post-processing as `launch.py explain`; the heads' scores are checked against
each point's own eval/scores_test.csv). Per image and method: the predicted class, ROI area (share of
the image at or above `config.explain.threshold` of the max-normalised map), pointing game and IoU
against the lesion, os, transformation-zone and cervix masks (an image without that mask has no
value). No deletion or
insertion curves (they need hundreds of backbone passes per image).

Writes WORKDIR/maps/per_image.csv (head, blur, method, id, label, group, pred, score and the metrics),
WORKDIR/maps/maps.md (means per head, method and blur; ROI area by class) and per blur level and head
one image grid WORKDIR/maps/blur=<k>/<head>.png (image, then one overlay column per method; the first
`GRID_IMAGES` test images), paper B's Figs. 4-7 (clean) and 8 (blurred).

    python launch.py sweep --config configs/pyramid.py:sweep,small --workdir runs/paper_b_sweep   # runs it
    python launch.py report --config configs/pyramid.py:sweep,small --workdir runs/paper_b_sweep \\
        --config.sweep.reports=paper_b_maps                                  # again, on an existing sweep
"""
from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from cervix_jax.explain import faithfulness, postprocess
from cervix_jax.explain.registry import explain
from cervix_jax.models import pyramid
from cervix_jax.models.parts import with_valid
from cervix_jax.reports.paper_b_table import head_label
from cervix_jax.train import rundir
from cervix_jax.train.checkpoint import restore
from cervix_jax.train.data import groups_by_id, local_data
from cervix_jax.train.sweep import grid_points, point_config, point_name
from cervix_jax.viz.overlay import write_grid

MASKS = ("lesion", "os", "tz", "cervix")
GRID_IMAGES = 8
ALPHA = 0.4
BATCH = 8
METRICS = ("roi_area",) + tuple(f"{k}_{m}" for m in MASKS for k in ("pointing_game", "iou"))


def _map_fn(model, methods: tuple, threshold: float):
    """jit(vmap) of one image's head scores, maps and metrics, from its concatenated feature map."""
    def one(feature_map, valid, display, masks):
        m = with_valid(model, valid)
        on_features = dataclasses.replace(m, features=lambda f: f, scores=m.head)
        scores = m.head(feature_map)
        pred = jnp.argmax(scores)
        out = {"scores": scores, "overlays": {}, "metrics": {}}
        for method in methods:
            raw = explain(method, on_features, feature_map, target=pred)
            heat = postprocess.heatmap(raw, valid.shape, valid=valid)
            metrics = {"roi_area": faithfulness.roi_area(heat, threshold, valid)}
            for name in MASKS:
                has = masks[name].sum() > 0
                metrics[f"pointing_game_{name}"] = jnp.where(
                    has, faithfulness.pointing_game(heat, masks[name], valid), jnp.nan)
                metrics[f"iou_{name}"] = jnp.where(has, faithfulness.iou(heat, masks[name], threshold, valid),
                                                   jnp.nan)
            out["metrics"][method] = metrics
            out["overlays"][method] = postprocess.jet_overlay(display, heat, ALPHA, threshold)
        return out

    return jax.jit(jax.vmap(one))


def _batches(examples: list, size: int):
    for start in range(0, len(examples), size):
        chunk = examples[start:start + size]
        n = len(chunk)
        chunk = chunk + [chunk[-1]] * (size - n)           # one compiled shape
        stack = lambda key: np.stack([np.asarray(e[key]) for e in chunk])  # noqa: E731
        zeros = np.zeros(np.shape(chunk[0]["valid"]), np.uint8)          # a dataset without that mask
        masks = {m: np.stack([np.asarray(e.get(f"{m}_mask", zeros), np.uint8) for e in chunk]) for m in MASKS}
        yield n, stack("image").astype(np.float32), stack("valid"), stack("display"), masks


def write(config, workdir, *, seed: Optional[int] = None) -> Optional[dict]:
    """The maps report (module docstring). None when the grid has no `model.levels` or no point of
    the chosen seed is evaluated."""
    workdir = Path(workdir)
    grid = dict(config.sweep.grid)
    if "model.levels" not in grid or config.model.name != "pyramid":
        return None
    points = grid_points(config)
    seed = int(points[0].get("seed", config.seed)) if seed is None else int(seed)
    chosen = [p for p in points if int(p.get("seed", config.seed)) == seed
              and rundir.eval_done(workdir / "points" / point_name(p))]
    if not chosen:
        return None
    methods = tuple(config.explain.methods)
    out = workdir / "maps"
    out.mkdir(exist_ok=True)
    group_of = groups_by_id(config.data)
    blurs = sorted({int(p.get("data.blur", config.data.blur)) for p in chosen})
    rows, figures = [], []
    for blur in blurs:
        at_blur = [p for p in chosen if int(p.get("data.blur", config.data.blur)) == blur]
        base = point_config(config, at_blur[0])
        data = local_data(base)
        examples = data.examples("test", 10 ** 9)
        first = restore(base, workdir / "points" / point_name(at_blur[0]), data)
        task, frozen = first.task, first.frozen
        maps_fn = jax.jit(task.pyramid_maps)
        pyramids = [(n, jax.device_get(maps_fn(frozen, images)), valid, display, masks)
                    for n, images, valid, display, masks in _batches(examples, BATCH)]
        for p in tqdm(at_blur, desc=f"maps blur={blur}", unit="head"):
            pdir = workdir / "points" / point_name(p)
            pconfig = point_config(config, p)
            run = restore(pconfig, pdir, data)
            model = run.task.explainable(run.variables)
            levels = pyramid.parse_levels(pconfig.model.levels)
            fn = _map_fn(model, methods, float(config.explain.threshold))
            result = []
            for n, maps, valid, display, masks in pyramids:
                feats = pyramid.concat_levels(maps, levels, pconfig.model.upsample)
                result.append((n, jax.device_get(fn(feats, valid, display, masks))))
            scores = np.concatenate([r["scores"][:n, 1] for n, r in result])
            stored = rundir.read_scores(pdir, "test")
            ids = np.array([e["id"] for e in examples])
            if not np.array_equal(stored["id"], ids) or np.max(np.abs(stored["score"] - scores)) > 1e-4:
                raise ValueError(f"paper_b_maps: {pdir}: the head's scores on the cached pyramid maps "
                                 f"differ from its eval/scores_test.csv (max |diff| "
                                 f"{np.max(np.abs(stored['score'] - scores)):.2e}); was it trained on "
                                 f"another backbone?")
            preds = np.concatenate([np.argmax(r["scores"][:n], -1) for n, r in result])
            head = head_label(levels)
            for method in methods:
                values = {k: np.concatenate([r["metrics"][method][k][:n] for n, r in result])
                          for k in METRICS}
                for i, e in enumerate(examples):
                    rows.append({"head": head, "levels": ",".join(levels), "blur": blur, "seed": seed,
                                 "method": method, "id": e["id"], "label": e["label"],
                                 "group": group_of[int(e["id"])], "pred": int(preds[i]),
                                 "score": float(scores[i]), **{k: float(values[k][i]) for k in METRICS}})
            k = min(GRID_IMAGES, len(examples))
            columns = {"image": np.stack([e["display"] for e in examples[:k]])}
            for method in methods:
                columns[method] = np.concatenate([r["overlays"][method][:n] for n, r in result])[:k]
            path = out / f"blur={blur}" / f"{head.replace('+', '_')}.png"
            path.parent.mkdir(exist_ok=True)
            write_grid(str(path), columns)
            figures.append(str(path))
    header = list(rows[0])
    with (out / "per_image.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    table = summarise(rows)
    (out / "maps.md").write_text(markdown(table, config, seed))
    return {"per_image": str(out / "per_image.csv"), "table": str(out / "maps.md"), "figures": figures,
            "rows": table}


def _nanmean(values) -> float:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def summarise(rows: list[dict]) -> list[dict]:
    """Means per (head, blur, method): ROI area overall and by true class, pointing game and IoU."""
    keys = list(dict.fromkeys((r["head"], r["blur"], r["method"]) for r in rows))
    table = []
    for head, blur, method in keys:
        sel = [r for r in rows if (r["head"], r["blur"], r["method"]) == (head, blur, method)]
        row = {"head": head, "blur": blur, "method": method, "n": len(sel)}
        for k in METRICS:
            row[k] = _nanmean([r[k] for r in sel])
        for c in (0, 1):
            row[f"roi_area_class{c}"] = _nanmean([r["roi_area"] for r in sel if r["label"] == c])
        table.append(row)
    return table


def markdown(table: list[dict], config, seed: int) -> str:
    names = ("ROI area", "ROI area (treatable)", "ROI area (not treatable)", "pointing game (lesion)",
             "IoU (lesion)", "pointing game (os)", "pointing game (cervix)", "IoU (cervix)")
    keys = ("roi_area", "roi_area_class0", "roi_area_class1", "pointing_game_lesion", "iou_lesion",
            "pointing_game_os", "pointing_game_cervix", "iou_cervix")
    lines = [f"CAM vs CRM per head, test images, head seed {seed}; maps max-normalised and cut at "
             f"{config.explain.threshold:g} (ROI area, IoU); pointing game = the map's maximum falls in "
             f"the mask. crm_linear = CRM in paper B's Eq. (1) space, crm = CRM of the softmax outputs.",
             "", "| head | blur | method | " + " | ".join(names) + " |",
             "|" + "---|" * (3 + len(names))]
    for r in table:
        lines.append(f"| {r['head']} | {r['blur']} | {r['method']} | "
                     + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"
