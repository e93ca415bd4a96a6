"""Paper A's regulator ablation (Fig. 5): lambda 0 / fixed / iterative x Eqn. 5's sum / mean, over runs
that vary the init seed AND the split, with intervals that resample runs and women, and controls.

    python launch.py sweep --config configs/patch.py:ablation --workdir runs/a_ablation
    python -m cervix_jax.reports.regulator_ablation runs/a_ablation [--out DIR]
    python -m cervix_jax.reports.regulator_ablation SWEEP_OR_RUN [SWEEP_OR_RUN ...] --out DIR

Every finished point of the sweeps (`points/*/eval/metrics.json`; a workdir that is one finished run
counts as one point) is one run of one arm ("<regulator>/<spatial_reduction>", `arm_of`: a run with
reg_lambda 0 is the "none" arm whatever its regulator, since its loss is the same, only its regulator is
still refit and so tracked; its loss does not depend on Eqn. 5's reduction, so when only one reduction's
none arm was run it stands beside both, `none_arms`); runs of different arms with the same (seed, split)
are paired: they were scored on the same test women. Per point, `regulator_evidence.measure_point` gives
the per-image map metrics of the patch-weight map (pointing game, IoU with the cervix, above-cut area,
weight mass on the cervix and `area_share`, the cervix's share of the image, what a flat map puts on it:
the mass's reference; it explains the point's test split first if it has not been) and, over every
training image at the end of training, the regulator's centre error. Added here, per test image:

- `iou_area_matched`: the IoU with the cervix of a centred ellipse of the map's own above-cut area
  (`paper_a.area_matched_centre_region`), and `iou_excess` = IoU - that: the localisation a compact
  centred blob of the same size would not get (the control for "IoU measures map shape").

Differences between arms are per run (paired images), their interval from
`metrics.hierarchical_bootstrap_diff` (runs, then women inside each run); the AUC difference from
`metrics.hierarchical_bootstrap_ci` on paired scores. Each paper claim gets a verdict from its
interval (`verdict`). Writes OUT/regulator_ablation.{md,json}, OUT/ablation_differences.png (the
intervals) and OUT/regulator_error_by_epoch.png (the tracked images' regulator centre error per epoch,
mean over runs per arm).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cervix_jax import metrics as M

ARM_KEYS = ("model.regulator", "model.spatial_reduction")
PER_TEST_IMAGE = ("mass_cervix", "area_share", "pointing_game_cervix", "iou_cervix", "iou_area_matched",
                  "iou_excess", "roi_area")
PER_TRAIN_IMAGE = ("reg_err",)
# (claim, regulator a, regulator b, metric, sign the paper expects for a - b); each is judged once per
# Eqn. 5 reduction r, between the arms `arm_for(regulator, r, ...)` names.
CLAIMS = (
    ("the iterative regulator puts more of the weight on the cervix than no regulator (Fig. 5c)",
     "iterative", "none", "mass_cervix", +1),
    ("the iterative regulator localises the cervix beyond a centred blob of the same area, better than "
     "the fixed centred one", "iterative", "fixed", "iou_excess", +1),
    ("the iterative regulator moves toward the cervix (centre error below the fixed regulator's)",
     "iterative", "fixed", "reg_err", -1),
    ("the regulator helps classification (test AUC)", "iterative", "none", "auc", +1),
)
REDUCTIONS = ("sum", "mean")


def verdict(low: float, high: float, sign: int) -> str:
    """'reproduced' when the 95% interval of a - b lies on the paper's side of 0 (sign +1: above),
    'refuted' when it lies on the other side, 'undecided' when it contains 0 (or is nan)."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "undecided"
    lo, hi = sorted((sign * low, sign * high))
    return "reproduced" if lo > 0 else "refuted" if hi < 0 else "undecided"


def add_controls(measured: dict, cervix_masks: np.ndarray) -> dict:
    """The per-test-image controls of the module doc, from `measure_point`'s roi_area / iou_cervix and the
    test images' cervix masks [n, H, W] (same order as measured["test_ids"])."""
    from cervix_jax.reports.paper_a import area_matched_centre_region, iou

    shape = cervix_masks.shape[1:]
    matched = [iou(area_matched_centre_region(a, shape), m) if np.isfinite(a) else np.nan
               for a, m in zip(measured["roi_area"], cervix_masks)]
    out = dict(measured)
    out["iou_area_matched"] = [float(v) for v in matched]
    out["iou_excess"] = (np.asarray(measured["iou_cervix"], np.float64) - np.asarray(matched)).tolist()
    return out


def arm_of(config) -> str:
    """"<regulator>/<spatial_reduction>" of a run's config; "none" when the spatial term is off
    (regulator "none", or reg_lambda 0: the same loss and so the same training)."""
    m = config.model
    off = m.regulator == "none" or float(m.reg_lambda) == 0.0
    return f"{'none' if off else m.regulator}/{m.spatial_reduction}"


def finished_runs(workdirs) -> list[Path]:
    """The finished runs (eval/metrics.json) of each workdir: a sweep's `points/*`, or the workdir itself
    when it is one run. Raises naming the workdir that holds none."""
    from cervix_jax.train import rundir

    runs = []
    for w in map(Path, workdirs):
        found = (sorted(p for p in (w / "points").glob("*") if rundir.eval_done(p)) if (w / "points").is_dir()
                 else [w] if rundir.eval_done(w) else [])
        if not found:
            raise FileNotFoundError(f"{w}: no finished run (expected points/*/eval/metrics.json for a sweep, "
                                    f"or eval/metrics.json for one run)")
        runs += found
    return runs


def measure(workdirs, *, explain: bool = True) -> list[dict]:
    """One record per finished run of `workdirs` (one path or several, `finished_runs`): arm, seed,
    split_seed, the measured lists (see module doc), the test and train groups (women), the test scores."""
    import ml_collections as mlc

    from cervix_jax.reports.regulator_evidence import measure_point
    from cervix_jax.train import rundir
    from cervix_jax.train.data import groups_by_id, local_data

    records, data_cache = [], {}
    for pdir in finished_runs([workdirs] if isinstance(workdirs, (str, Path)) else workdirs):
        config = mlc.ConfigDict(rundir.read_config(pdir))
        key = json.dumps(config.data.to_dict(), sort_keys=True, default=str)
        if key not in data_cache:
            data = local_data(config)
            data_cache[key] = (data, data.examples("train", 10 ** 9),
                               data.examples(config.explain.split, config.explain.max_images),
                               groups_by_id(config.data))
        data, train_ex, test_ex, group_of = data_cache[key]
        r = add_controls(measure_point(config, pdir, data, train_ex, test_ex, explain),
                         np.stack([e["cervix_mask"] for e in test_ex]))
        test = rundir.read_scores(pdir, "test")
        r.update(arm=arm_of(config), seed=int(config.seed),
                 split_seed=int(config.data.split_seed), dir=str(pdir),
                 test_groups=[group_of[i] for i in r["test_ids"]],
                 train_groups=[group_of[int(e["id"])] for e in train_ex],
                 scores={int(i): (float(s), int(y))
                         for i, s, y in zip(test["id"], test["score"], test["label"])},
                 score_groups={int(i): group_of[int(i)] for i in test["id"]})
        records.append(r)
    return records


def paired_difference(records: list[dict], a: str, b: str, metric: str, *, n_boot: int = 2000) -> dict:
    """a - b over the runs both arms have (paired by seed and split): the per-run mean differences and
    the runs x women interval. Per-image metrics pair image by image; "auc" pairs the test scores."""
    ra = {(r["seed"], r["split_seed"]): r for r in records if r["arm"] == a}
    rb = {(r["seed"], r["split_seed"]): r for r in records if r["arm"] == b}
    runs = sorted(set(ra) & set(rb))
    if not runs:
        return {}
    if metric == "auc":
        tuples = []
        for k in runs:
            ids = sorted(ra[k]["scores"])
            if sorted(rb[k]["scores"]) != ids:
                raise ValueError(f"{ra[k]['dir']} and {rb[k]['dir']}: paired runs scored different test "
                                 f"images")
            # every scored test image's woman (the map metrics may cover only explain.max_images of them)
            g = ra[k].get("score_groups") or dict(zip(ra[k]["test_ids"], ra[k]["test_groups"]))
            tuples.append((np.array([ra[k]["scores"][i][0] for i in ids]),
                           np.array([rb[k]["scores"][i][0] for i in ids]),
                           np.array([ra[k]["scores"][i][1] for i in ids]), np.array([g[i] for i in ids])))
        ci = M.hierarchical_bootstrap_ci(M.auc, tuples, n_boot=n_boot, seed=0)
    else:
        groups_key = "test_groups" if metric in PER_TEST_IMAGE else "train_groups"
        diffs, groups = [], []
        for k in runs:
            d = np.asarray(ra[k][metric], np.float64) - np.asarray(rb[k][metric], np.float64)
            ok = np.isfinite(d)
            diffs.append(d[ok])
            groups.append(np.asarray(ra[k][groups_key])[ok])
        ci = M.hierarchical_bootstrap_diff(diffs, groups, n_boot=n_boot, seed=0)
    return {"a": a, "b": b, "metric": metric, "runs": len(runs), "estimate": float(ci["estimate"]),
            "low": float(ci["low"]), "high": float(ci["high"]), "per_run": [float(v) for v in ci["per_run"]]}


def arm_table(records: list[dict]) -> list[dict]:
    """Per arm: runs, and mean ± sd over runs of each run's mean of every metric (and test AUC)."""
    rows = []
    for arm in sorted({r["arm"] for r in records}):
        rs = [r for r in records if r["arm"] == arm]
        row = {"arm": arm, "runs": len(rs)}
        for k in ("auc",) + PER_TEST_IMAGE + PER_TRAIN_IMAGE + ("init_err",):
            v = np.array([r[k] if k == "auc" else np.nanmean(r[k]) for r in rs], np.float64)
            row[k], row[k + "_sd"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        rows.append(row)
    return rows


def none_arms(arms) -> dict:
    """Eqn. 5's reduction -> the arm that stands for "no spatial term" beside it: "none/<r>" when it was
    run, else the none arm of the other reduction (a run without the spatial term trains the same loss
    whatever the reduction, so one set of lambda-0 runs serves both; the tables then name the arm that
    was run, e.g. "iterative/sum − none/mean")."""
    run = [f"none/{r}" for r in REDUCTIONS if f"none/{r}" in arms]
    return {r: f"none/{r}" if f"none/{r}" in arms else (run[0] if run else f"none/{r}") for r in REDUCTIONS}


def arm_for(regulator: str, reduction: str, none: dict) -> str:
    """The arm label standing for `regulator` under Eqn. 5's `reduction`; "none" resolves through
    `none_arms` (its output is `none`)."""
    return none[reduction] if regulator == "none" else f"{regulator}/{reduction}"


def write(config, workdir) -> dict:
    """The report-registry entry (`config.sweep.reports = (..., "regulator_ablation")`): measures the
    sweep's finished points and writes the tables and figures into its workdir."""
    del config
    return write_tables(measure(workdir), workdir)


def write_tables(records: list[dict], out, *, n_boot: int = 2000) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = arm_table(records)
    arms = {r["arm"] for r in records}
    none = none_arms(arms)
    pairs = [(arm_for(x, r, none), arm_for(y, r, none)) for r in REDUCTIONS
             for x, y in (("iterative", "none"), ("iterative", "fixed"), ("fixed", "none"))]
    pairs.append(("iterative/sum", "iterative/mean"))
    diffs = [d for a, b in pairs if a in arms and b in arms
             for m in ("auc", "mass_cervix", "iou_cervix", "iou_excess", "pointing_game_cervix", "reg_err")
             if (d := paired_difference(records, a, b, m, n_boot=n_boot))]
    claims = []
    for text, a, b, metric, sign in CLAIMS:
        for r in REDUCTIONS:
            want = (arm_for(a, r, none), arm_for(b, r, none), metric)
            d = next((d for d in diffs if (d["a"], d["b"], d["metric"]) == want), None)
            if d:
                claims.append({"claim": text, "reduction": r, **d,
                               "verdict": verdict(d["low"], d["high"], sign)})

    cols = [("auc", "test AUC"), ("mass_cervix", "weight mass on cervix"),
            ("area_share", "cervix area share"),
            ("pointing_game_cervix", "pointing game"), ("iou_cervix", "IoU (cervix)"),
            ("iou_area_matched", "IoU of the area-matched centred blob"), ("roi_area", "map area ≥ cut"),
            ("reg_err", "regulator centre err. (patches, end)"), ("init_err", "at init")]
    fmt = lambda r, k: f"{r[k]:.3f}" + ("" if np.isnan(r[k + "_sd"]) else f" ± {r[k + '_sd']:.3f}")
    md = ["| arm (regulator / Eqn. 5) | runs | " + " | ".join(c for _, c in cols) + " |",
          "|---" * (len(cols) + 2) + "|"]
    md += [f"| {r['arm']} | {r['runs']} | " + " | ".join(fmt(r, k) for k, _ in cols) + " |" for r in rows]
    md += ["", "| a − b | metric | runs | mean of per-run differences | 95% (runs x women) | per run |",
           "|---|---|---|---|---|---|"]
    md += [f"| {d['a']} − {d['b']} | {d['metric']} | {d['runs']} | {d['estimate']:+.3f} | "
           f"[{d['low']:+.3f}, {d['high']:+.3f}] | " + ", ".join(f"{v:+.3f}" for v in d["per_run"]) + " |"
           for d in diffs]
    md += ["", "| paper A's claim | Eqn. 5 | a − b | metric | 95% (runs x women) | verdict |",
           "|---|---|---|---|---|---|"]
    md += [f"| {c['claim']} | {c['reduction']} | {c['a']} − {c['b']} | {c['metric']} | "
           f"{c['estimate']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | {c['verdict']} |" for c in claims]
    (out / "regulator_ablation.md").write_text("\n".join(md) + "\n")
    slim = [{k: v for k, v in r.items() if k not in ("scores", "score_groups")} for r in records]
    (out / "regulator_ablation.json").write_text(json.dumps(
        {"arms": rows, "differences": diffs, "claims": claims, "runs": slim}, indent=1, default=float))
    figures = write_figures(records, diffs, out)
    return {"arms": rows, "differences": diffs, "claims": claims,
            "written": ["regulator_ablation.md", "regulator_ablation.json"] + figures}


def write_figures(records: list[dict], diffs: list[dict], out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if diffs:
        fig, ax = plt.subplots(figsize=(7, 0.28 * len(diffs) + 1.2))
        for i, d in enumerate(diffs):
            ax.hlines(i, d["low"], d["high"], color="tab:blue")   # a percentile interval need not
            ax.plot([d["estimate"]], [i], "o", color="tab:blue", ms=3)  # contain the estimate
        ax.axvline(0, color="k", lw=0.8, ls=":")
        ax.set_yticks(range(len(diffs)), [f"{d['a']} − {d['b']}: {d['metric']}" for d in diffs], fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("a − b, mean over runs (95% runs x women)")
        fig.tight_layout()
        fig.savefig(out / "ablation_differences.png", dpi=120)
        plt.close(fig)
        written.append("ablation_differences.png")
    curves = [r for r in records if r.get("tracked_curve")]
    if curves:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for arm in sorted({r["arm"] for r in curves}):
            rs = [r["tracked_curve"] for r in curves if r["arm"] == arm]
            epochs = sorted(set.intersection(*(set(int(e) for e in c) for c in rs)))
            ax.plot(epochs, [np.mean([c[e] for c in rs]) for e in epochs], marker=".", label=arm)
        ax.set_xlabel("epoch")
        ax.set_ylabel("regulator centre error (patches)")
        ax.set_title("4 tracked training images, mean over runs", fontsize=8)
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / "regulator_error_by_epoch.png", dpi=120)
        plt.close(fig)
        written.append("regulator_error_by_epoch.png")
    return written


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("workdirs", nargs="+", help="sweep workdirs and/or single-run workdirs")
    p.add_argument("--out", default=None, help="output folder (default: the workdir; required with several)")
    a = p.parse_args(argv)
    if a.out is None and len(a.workdirs) > 1:
        p.error(f"--out is required with several workdirs ({len(a.workdirs)} given)")
    out = a.out or a.workdirs[0]
    result = write_tables(measure(a.workdirs), out)
    print((Path(out) / "regulator_ablation.md").read_text())
    return result


if __name__ == "__main__":
    main()
