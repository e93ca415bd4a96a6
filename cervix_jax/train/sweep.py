"""`sweep(config, workdir)`: every point of `config.sweep.grid` in its own workdir
`WORKDIR/points/<key=value,...>/`, trained by the trainer `config.sweep.trainer` names.

Trainers: "loop" (`train_points_with_loop`: one ordinary `loop.train` + `evaluate` per point) and
"cached_heads" (`train/cached_heads.py`: paper B's heads from one backbone pass, all points together).
A trainer is `fn(config, points, workdir) -> points left undone`; points the cached-feature trainer
leaves go to the loop. Both write the same per-point files through `rundir`. Resumable: a point with
`eval/metrics.json` is done and skipped; a half-trained point resumes from its checkpoint. The reports
of `config.sweep.reports` (`cervix_jax/reports/`) are run on the result by `launch.py sweep`.
"""
from __future__ import annotations

import copy
import gc
import importlib
import itertools
from pathlib import Path
from typing import Any

from cervix_jax.train import rundir

# name -> "module:function"; function(config, points, workdir) -> the points it left undone.
TRAINERS: dict[str, str] = {
    "loop": "cervix_jax.train.sweep:train_points_with_loop",
    "cached_heads": "cervix_jax.train.cached_heads:train_points",
}


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
    for keys, value in point.items():
        for key in keys.split("+"):        # "seed+data.split_seed": one value sets both (zipped)
            *parents, leaf = key.split(".")
            node = c
            for p in parents:
                node = node[p]
            if leaf not in node:
                raise KeyError(f"config.sweep.grid: unknown key {key!r}")
            node[leaf] = value
    return c


def register_trainer(name: str, target: str) -> None:
    """Registers a sweep trainer "module:function" under `name` (for user extensions)."""
    TRAINERS[name] = target


def train_points_with_loop(config, points: list, workdir) -> list:
    """One `loop.train` + `evaluate` per point; returns the points left when a run is interrupted.

    JAX's caches are cleared after each point: XLA:CPU maps every compiled executable into memory, a
    point's executables are not reused by the next (new closures), and keeping them all exhausted
    Linux's default 65,530 memory maps after ~40 points of `configs/baselines.py:table1_crop,cpu` (the
    process died with "LLVM compilation error: Cannot allocate memory" while 23 GB were free)."""
    import jax

    from cervix_jax.train import identity
    from cervix_jax.train.evaluate import evaluate
    from cervix_jax.train.loop import train

    for i, p in enumerate(points):
        pdir = Path(workdir) / "points" / point_name(p)
        print(f"sweep point {i + 1}/{len(points)}: {point_name(p)}", flush=True)
        pc = point_config(config, p)
        identity.record(pc, pdir, mode="sweep")   # a point made under another config is refused
        if train(pc, pdir)["status"] == "interrupted":
            return list(points[i:])
        evaluate(pc, pdir, out_dir=pdir / rundir.EVAL_DIR)   # the sweep owns its points' eval/
        jax.clear_caches()
        gc.collect()
    return []


def sweep(config, workdir) -> dict:
    """Runs the missing points; returns {"points", "done", "status"} ("finished" | "interrupted")."""
    workdir = Path(workdir)
    points = grid_points(config)
    todo = [p for p in points if not rundir.eval_done(workdir / "points" / point_name(p))]
    name = config.sweep.trainer
    if name not in TRAINERS:
        raise ValueError(f"config.sweep.trainer: expected one of {sorted(TRAINERS)}, found {name!r}")
    module, fn = TRAINERS[name].split(":")
    left = getattr(importlib.import_module(module), fn)(config, todo, workdir) if todo else []
    if left and name != "loop":
        left = train_points_with_loop(config, left, workdir)
    return {"points": len(points), "done": len(points) - len(left),
            "status": "interrupted" if left else "finished"}
