"""`sweep(config, workdir)`: every point of `config.sweep.grid` in its own workdir
`WORKDIR/points/<key=value,...>/`, then `WORKDIR/summary.md` and `summary.csv` with mean +/- sd
over seeds of the test metrics at the validation-chosen threshold.

Resumable: a point with `eval/metrics.json` is done and skipped; a half-trained point resumes
from its checkpoint. A task with `sweep_fast(config, points, workdir)` (frozen-backbone heads
trained together; `config.sweep.fast=False` turns it off) runs the points it can itself, leaving
the same per-point files (config.json, eval/metrics.json, eval/scores_{val,test}.csv), and returns
those it leaves to the ordinary loop. A task with `sweep_report(config, workdir)` then writes its
own table (paper B: `paper_table.md`/`.csv`) next to the summary.
"""
from __future__ import annotations

import copy
import csv
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

TABLE_METRICS = ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "auc", "one_minus_eer")


def grid_points(config) -> list[dict[str, Any]]:
    """The cartesian product of `config.sweep.grid` ((dotted key, values), ...), in grid order."""
    grid = [(str(k), tuple(v)) for k, v in config.sweep.grid]
    if not grid:
        raise ValueError("config.sweep.grid is empty: expected ((dotted key, values), ...)")
    keys = [k for k, _ in grid]
    return [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))]


def point_name(point: dict) -> str:
    """Directory name of a point, e.g. `model.levels=p3,p6,p7__seed=0`."""
    def fmt(v):
        return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)
    return "__".join(f"{k}={fmt(v)}" for k, v in point.items()).replace("/", "_").replace(" ", "")


def point_config(config, point: dict):
    """A copy of `config` with the point's keys set (unknown keys fail naming the key)."""
    c = copy.deepcopy(config)
    with c.unlocked():
        c.sweep.grid = ()
    for key, value in point.items():
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"config.sweep.grid: unknown key {key!r}")
        node[leaf] = value
    return c


def sweep(config, workdir) -> dict:
    """Runs the missing points, then writes the summary; returns {"points", "done", "summary"}."""
    from cervix_jax.train import identity
    from cervix_jax.train.evaluate import evaluate
    from cervix_jax.train.loop import train
    from cervix_jax.train.task import make_task

    workdir = Path(workdir)
    points = grid_points(config)
    todo = [p for p in points if not (workdir / "points" / point_name(p) / "eval" / "metrics.json").exists()]
    task = make_task(config)
    if todo and config.sweep.get("fast", True) and hasattr(task, "sweep_fast"):
        # Runs what it can together and returns the points it leaves to the ordinary loop (None: all done).
        todo = list(task.sweep_fast(config, todo, workdir) or [])
    for i, p in enumerate(todo):
        pdir = workdir / "points" / point_name(p)
        print(f"sweep point {i + 1}/{len(todo)} (of {len(points)}): {point_name(p)}", flush=True)
        pc = point_config(config, p)
        identity.record(pc, pdir, mode="sweep")   # a point made under another config is refused
        if train(pc, pdir)["status"] == "interrupted":
            return {"points": len(points), "done": i, "summary": None, "status": "interrupted"}
        evaluate(pc, pdir)
    out = {"points": len(points), "done": len(points), "summary": summarize(config, workdir),
           "status": "finished"}
    if hasattr(task, "sweep_report"):   # a task's own table (paper B: the paper's format, intervals)
        out["report"] = task.sweep_report(config, workdir)
    return out


def summarize(config, workdir) -> dict:
    """Groups points by every key but `seed`; writes summary.md and summary.csv (mean, sd, n)."""
    workdir = Path(workdir)
    groups: dict[tuple, list[dict]] = {}
    keys = [k for k, _ in config.sweep.grid if k != "seed"]
    for p in grid_points(config):
        f = workdir / "points" / point_name(p) / "eval" / "metrics.json"
        if f.exists():
            m = json.loads(f.read_text())["test"]["at_val_threshold"]
            groups.setdefault(tuple(str(p[k]) for k in keys), []).append(m)
    rows = []
    for g, ms in groups.items():
        row = dict(zip(keys, g), n=len(ms))
        for name in TABLE_METRICS:
            v = np.array([m[name] for m in ms], np.float64)
            row[name] = float(v.mean())
            row[name + "_sd"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        rows.append(row)
    header = keys + ["n"] + [c for name in TABLE_METRICS for c in (name, name + "_sd")]
    with (workdir / "summary.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    md = ["| " + " | ".join(keys + ["n"] + list(TABLE_METRICS)) + " |",
          "|" + "---|" * (len(keys) + 1 + len(TABLE_METRICS))]
    for r in rows:
        cells = [str(r[k]) for k in keys] + [str(r["n"])]
        cells += [f"{r[n]:.4f}" + ("" if np.isnan(r[n + "_sd"]) else f" ± {r[n + '_sd']:.4f}")
                  for n in TABLE_METRICS]
        md.append("| " + " | ".join(cells) + " |")
    text = ("Test metrics at the validation-chosen threshold, mean ± sd over seeds (n runs).\n\n"
            + "\n".join(md) + "\n")
    (workdir / "summary.md").write_text(text)
    return {"rows": rows, "markdown": str(workdir / "summary.md"), "csv": str(workdir / "summary.csv")}
