"""The sweep summary: `WORKDIR/summary.md` and `summary.csv`, test metrics at the validation-chosen
threshold per grid point, grouped by every grid key but `seed` (mean, sd over seeds, n)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cervix_jax.train import rundir
from cervix_jax.train.sweep import grid_points, point_name

TABLE_METRICS = ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "auc", "one_minus_eer")


def write(config, workdir) -> dict:
    """Writes summary.md and summary.csv; returns {"rows", "markdown", "csv"}."""
    workdir = Path(workdir)
    groups: dict[tuple, list[dict]] = {}
    keys = [k for k, _ in config.sweep.grid if "seed" not in k.split("+")]   # "seed+data.split_seed" too
    for p in grid_points(config):
        pdir = workdir / "points" / point_name(p)
        if rundir.eval_done(pdir):
            m = rundir.read_eval(pdir)["test"]["at_val_threshold"]
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
