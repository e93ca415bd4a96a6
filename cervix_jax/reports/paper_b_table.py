"""Paper B's table from a sweep's per-point files (cached-feature or ordinary runs alike):
`WORKDIR/paper_table.md` and `.csv`. See `write`."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import numpy as np

from cervix_jax import metrics as M
from cervix_jax.models import pyramid
from cervix_jax.train import rundir
from cervix_jax.train.data import groups_by_id
from cervix_jax.train.sweep import grid_points, point_name

REFERENCE_HEAD = ("P3", "P6", "P7")   # the paper's best head: paired differences are taken against it


def head_label(levels) -> str:
    """("P3", "P6", "P7") -> "P3+P6+P7"; all five -> "P3..P7"."""
    levels = pyramid.canonical_levels(levels)
    return "P3..P7" if levels == pyramid.LEVELS else "+".join(levels)


def _mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else float("nan"))


def _fmt(mean: float, sd: float = float("nan"), digits: int = 4) -> str:
    if np.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if np.isnan(sd) else f" ± {sd:.{digits}f}")


def _clean(x: float) -> float:
    """Differences of seed-mean accuracies carry float noise (-1e-17): round it away (and -0.0)."""
    return round(float(x), 12) + 0.0


def _fmt_interval(iv: Optional[dict], signed: bool = False) -> str:
    if not iv:
        return ""
    f = "+.4f" if signed else ".4f"
    low, high, est = _clean(iv["low"]), _clean(iv["high"]), _clean(iv["estimate"])
    star = " *" if signed and (low > 0 or high < 0) else ""
    return f"{est:{f}} [{low:{f}}, {high:{f}}]{star}"


def write(config, workdir, *, n_boot: int = 1000, boot_seed: int = 0) -> Optional[dict]:
    """Paper B's table from the sweep's per-point files: `WORKDIR/paper_table.md` and `.csv`.

    Rows: the heads of the grid's `model.levels`; for each `data.blur` level: test accuracy and F1 at
    each seed's validation-chosen threshold and AUC, mean ± sd over seeds; a 95% percentile bootstrap
    interval (`metrics.bootstrap_ci`, test groups resampled) of the seed-mean accuracy; and the paired
    difference P3+P6+P7 minus each head (`metrics.paired_bootstrap_diff`), paired per seed: the
    statistic is the mean over seeds of the per-seed accuracy difference, each head and seed at its own
    val-chosen threshold, with the same group resample for both heads and all seeds. Computed on
    the per-example seed-mean correctness c[i] = mean_s 1[(score_s[i] >= t_s) == y[i]], whose mean is
    the seed-mean accuracy. None when the grid has no `model.levels` or no point is done.
    """
    workdir = Path(workdir)
    if "model.levels" not in dict(config.sweep.grid):
        return None
    records: dict = {}
    for p in grid_points(config):
        pdir = workdir / "points" / point_name(p)
        if not rundir.eval_done(pdir):
            continue
        m = rundir.read_eval(pdir)
        head = pyramid.parse_levels(p["model.levels"])
        blur = int(p.get("data.blur", config.data.blur))
        records.setdefault((head, blur), {})[int(p.get("seed", config.seed))] = {
            "metrics": m["test"]["at_val_threshold"], "threshold": m["thresholds"]["val_chosen"],
            "scores": rundir.read_scores(pdir, "test")}
    if not records:
        return None
    heads = list(dict.fromkeys(pyramid.parse_levels(v) for v in dict(config.sweep.grid)["model.levels"]))
    heads = [h for h in heads if any(k[0] == h for k in records)]
    blurs = sorted({k[1] for k in records})
    headline = 0 if 0 in blurs else blurs[0]
    group_of = groups_by_id(config.data)
    ref = REFERENCE_HEAD if any(k[0] == REFERENCE_HEAD for k in records) else None

    def correctness(rec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, labels, seed-mean correctness) of one (head, blur) over its seeds."""
        seeds = sorted(rec)
        ids = rec[seeds[0]]["scores"]["id"]
        labels = rec[seeds[0]]["scores"]["label"]
        hits = []
        for s in seeds:
            sc = rec[s]["scores"]
            if not np.array_equal(sc["id"], ids):
                raise ValueError("paper table: seeds were scored on different test examples")
            hits.append((sc["score"] >= rec[s]["threshold"]).astype(np.int64) == labels)
        return ids, labels, np.mean(hits, axis=0)

    def mean_acc(c, y):
        return float(np.mean(c))

    rows, stats = [], {}
    for head in heads:
        for blur in blurs:
            rec = records.get((head, blur))
            if not rec:
                continue
            ids, labels, corr = correctness(rec)
            groups = np.array([group_of[int(i)] for i in ids])
            row = {"head": head_label(head), "levels": ",".join(head), "blur": blur, "n_seeds": len(rec),
                   "seeds": " ".join(map(str, sorted(rec))), "n_test": len(ids),
                   "n_test_groups": len(np.unique(groups))}
            for name in ("accuracy", "f1", "auc", "balanced_accuracy", "precision", "recall"):
                row[name], row[name + "_sd"] = _mean_sd([rec[s]["metrics"][name] for s in sorted(rec)])
            ci = M.bootstrap_ci(mean_acc, corr, labels, groups, n_boot=n_boot, seed=boot_seed)
            row["accuracy_ci_low"], row["accuracy_ci_high"] = ci["low"], ci["high"]
            stats[(head, blur)] = {"ids": ids, "labels": labels, "corr": corr, "groups": groups,
                                   "seeds": sorted(rec), "ci": ci}
            rows.append(row)
    for row in rows:
        head, blur = pyramid.parse_levels(row["levels"].lower()), row["blur"]
        row["diff_ref_minus_head"] = row["diff_low"] = row["diff_high"] = float("nan")
        a, b = stats.get((ref, blur)), stats[(head, blur)]
        if ref is None or head == ref or a is None:
            continue
        if not np.array_equal(a["ids"], b["ids"]) or a["seeds"] != b["seeds"]:
            continue   # not paired: different test examples or seeds
        d = M.paired_bootstrap_diff(mean_acc, a["corr"], b["corr"], a["labels"], a["groups"],
                                    n_boot=n_boot, seed=boot_seed)
        d = {**d, "estimate": _clean(d["estimate"]), "low": _clean(d["low"]), "high": _clean(d["high"])}
        row["diff_ref_minus_head"], row["diff_low"], row["diff_high"] = d["estimate"], d["low"], d["high"]
        stats[(head, blur)]["diff"] = d

    header = ["head", "levels", "blur", "n_seeds", "seeds", "n_test", "n_test_groups"]
    for name in ("accuracy", "f1", "auc", "balanced_accuracy", "precision", "recall"):
        header += [name, name + "_sd"]
    header += ["accuracy_ci_low", "accuracy_ci_high", "diff_ref_minus_head", "diff_low", "diff_high"]
    with (workdir / "paper_table.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)

    by = {(pyramid.parse_levels(r["levels"].lower()), r["blur"]): r for r in rows}
    any_row = rows[0]
    ref_name = head_label(REFERENCE_HEAD)
    md = [f"Test set: {any_row['n_test']} images in {any_row['n_test_groups']} groups; seeds "
          f"{any_row['seeds']}. Accuracy and F1 at each seed's threshold chosen on the (clean) validation "
          f"split, AUC threshold-free; mean ± sd over seeds. 95% CI: percentile bootstrap of the seed-mean "
          f"accuracy, test groups resampled ({n_boot} resamples). Δ = {ref_name} minus the head, paired per "
          f"seed (mean over seeds of the per-seed accuracy difference, the same group resample for both "
          f"heads and every seed); * = the interval excludes 0.", ""]
    md += [f"Clean test images (blur {headline}):", "",
           f"| head | accuracy | 95% CI | F1 | AUC | Δ accuracy ({ref_name} − head) [95% CI] |",
           "|---|---|---|---|---|---|"]
    for head in heads:
        r = by.get((head, headline))
        if r is None:
            continue
        d = stats[(head, headline)].get("diff")
        md.append(f"| {r['head']} | {_fmt(r['accuracy'], r['accuracy_sd'])} | "
                  f"[{r['accuracy_ci_low']:.4f}, {r['accuracy_ci_high']:.4f}] | "
                  f"{_fmt(r['f1'], r['f1_sd'])} | "
                  f"{_fmt(r['auc'], r['auc_sd'])} | {_fmt_interval(d, signed=True) or '—'} |")
    blur_header = "| head | " + " | ".join(f"k = {b}" for b in blurs) + " |"
    if len(blurs) > 1:
        for title, name in (("accuracy", "accuracy"), ("F1", "f1"), ("AUC", "auc")):
            md += ["", f"Test {title} by Gaussian blur kernel size k (test images only):", "",
                   blur_header, "|---" * (len(blurs) + 1) + "|"]
            for head in heads:
                cells = [_fmt(by[(head, b)][name], by[(head, b)][name + "_sd"]) if (head, b) in by else ""
                         for b in blurs]
                md.append(f"| {head_label(head)} | " + " | ".join(cells) + " |")
        if ref is not None:
            md += ["", f"Δ accuracy ({ref_name} − head) [95% paired CI] by blur:", "",
                   blur_header, "|---" * (len(blurs) + 1) + "|"]
            for head in heads:
                if head == ref:
                    continue
                cells = [_fmt_interval(stats.get((head, b), {}).get("diff"), signed=True) for b in blurs]
                md.append(f"| {head_label(head)} | " + " | ".join(cells) + " |")
    (workdir / "paper_table.md").write_text("\n".join(md) + "\n")
    return {"markdown": str(workdir / "paper_table.md"), "csv": str(workdir / "paper_table.csv"),
            "rows": len(rows)}
