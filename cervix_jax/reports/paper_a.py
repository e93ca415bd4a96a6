"""Paper A's Table 1 and Fig. 4 (a-d) from finished sweeps (the patch model and the baselines).

    python -m cervix_jax.reports.paper_a OUT_DIR SWEEP_WORKDIR [SWEEP_WORKDIR ...] [--tsne]

Reads every evaluated point of the sweeps (`points/<name>/`, through `cervix_jax.train.rundir`:
its config, eval metrics and val/test scores), names each point's approach from its config (`approach`),
chooses Crop-k's k per architecture on validation AUC (the mean over its runs, as the paper chose k on
validation), and writes into OUT_DIR:

- `table1.md` / `table1.csv`: accuracy, F1, precision, recall, AUC, 1-EER on test at the
  validation-chosen threshold, mean ± sd over runs, a 95% interval of the mean AUC by resampling
  runs, and the annotation column (yes for Crop-k and the box crop);
- `table1_differences.md` (with the runs' women known): paired test AUC differences over run pairs
  that share init seed and split (so the same test women), with 95% intervals resampling run pairs and
  women: each annotation-using baseline minus the same network on the whole image, and each patch-model
  approach minus each annotation-free whole-image baseline;
- `fig4a_metrics.png`: every metric divided by its best approach (the normalised comparison);
- `fig4b_roc.png`: ROC curves of the annotation-free approaches on one plot (vertical average over
  runs);
- `fig4c_scores.png`: predicted-probability distributions per class and approach (all runs);
- with `--tsne`, `fig4d_tsne.png`: scikit-learn's t-SNE of the aggregated image features (the
  classifier's input, `task.image_features`) of the test images of each approach's first run,
  coloured by class;
- `fig4e_grade.png` / `fig4f_visit.png`: the test images' predicted probability by CIN grade (box
  per grade) and by screening visit (mean per visit and class), all runs of each approach, when the
  runs' data carry `cin_grade` and `visit` (synthetic v2, docs/data.md); otherwise they are left out
  and the result's `notes` says why.
"""
from __future__ import annotations

import argparse
import csv
import json
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from cervix_jax.train import rundir

METRICS = ("accuracy", "f1", "precision", "recall", "auc", "one_minus_eer")
ARCH_NAMES = {"lenet": "LeNet (Vasudha'18)", "caffenet": "CaffeNet (Xu'17)", "vgg16": "VGG16",
              "inception": "InceptionNet"}


def approach(config: dict) -> tuple[str, bool, str]:
    """(approach name, uses annotation, group key for the k choice) from a point's config.json."""
    m = config["model"]
    if m["name"] == "patch":
        reduction = f", Eqn. 5 {m['spatial_reduction']}" if "spatial_reduction" in m else ""
        size = f", {m['patch_size']} px patches" if "patch_size" in m else ""
        regulator = m.get("regulator", "iterative")
        regulator = "no regulator" if regulator == "none" else f"{regulator} regulator"
        return f"Patch model ({regulator}{reduction}{size})", False, ""
    if m["name"] != "baseline":
        return m["name"], False, ""
    arch = ARCH_NAMES.get(m["arch"], m["arch"])
    if m.get("freeze_blocks"):
        arch = f"{arch} FZ{m['freeze_blocks']}"
    if m["crop"] == "center":
        return f"Crop-k {arch}", True, f"k={m['crop_size']}"
    if m["crop"] == "box":
        source = "oracle box" if m.get("box_source", "oracle") == "oracle" else "detector box"
        return f"Hu'19 analogue, {source}, {arch}", True, ""
    return arch, False, ""


def collect(workdirs) -> list[dict]:
    """Every finished point of the sweeps: {approach, annotation, k, dir, config, metrics, scores}."""
    runs = []
    for wd in workdirs:
        for point in sorted((Path(wd) / "points").glob("*")):
            if not rundir.eval_done(point):
                continue
            config = rundir.read_config(point)
            name, annotation, k = approach(config)
            runs.append({"approach": name, "annotation": annotation, "k": k, "dir": point, "config": config,
                         "metrics": rundir.read_eval(point),
                         "scores": {s: rundir.read_scores(point, s) for s in ("val", "test")}})
    if not runs:
        raise FileNotFoundError(f"no finished sweep point (points/*/eval/metrics.json) under "
                                f"{[str(w) for w in workdirs]}")
    return runs


def choose_k(runs: list[dict]) -> list[dict]:
    """Keeps, per Crop-k approach, the runs of the k with the best mean validation AUC."""
    by: dict[str, dict[str, list]] = {}
    for r in runs:
        if r["k"]:
            by.setdefault(r["approach"], {}).setdefault(r["k"], []).append(r)
    keep = [r for r in runs if not r["k"]]
    for name, ks in by.items():
        best = max(ks, key=lambda k: np.mean([r["metrics"]["val"]["at_0.5"]["auc"] for r in ks[k]]))
        keep += [dict(r, approach=f"{name} ({best}, chosen on val)") for r in ks[best]]
    return keep


def run_bootstrap_interval(values, *, rng: np.random.Generator, n_boot: int = 2000) -> tuple[float, float]:
    """95% percentile interval of the mean of `values` (one per run), resampling runs."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return (float("nan"), float("nan"))
    means = v[rng.integers(0, len(v), (n_boot, len(v)))].mean(1)
    return tuple(float(q) for q in np.percentile(means, [2.5, 97.5]))


def row_rng(seed: int, name: str) -> np.random.Generator:
    """The bootstrap generator of one table row: seeded by `seed` and the row's name (CRC-32 of its
    UTF-8 bytes, stable across processes, unlike Python's salted `hash`)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def groups_of(config: dict) -> dict[int, int]:
    """Example id -> woman (group) of a run's data (config.json's `data`), for the runs x women interval."""
    import ml_collections as mlc

    from cervix_jax.train.data import groups_by_id
    return groups_by_id(mlc.ConfigDict(config["data"]))


def cached_per_data(lookup):
    """lookup(config) computed once per distinct `config["data"]` (runs of a sweep share their data)."""
    cache: dict[str, object] = {}

    def get(config):
        key = json.dumps(config.get("data", {}), sort_keys=True, default=str)
        if key not in cache:
            cache[key] = lookup(config)
        return cache[key]
    return get


def test_groups(run: dict, ids, group_lookup) -> np.ndarray:
    """The woman (group) of each of `ids`, test images of `run`; KeyError naming the run otherwise."""
    group_of = group_lookup(run["config"])
    try:
        return np.array([group_of[int(i)] for i in ids])
    except KeyError as e:
        raise KeyError(f"{run['dir']}: test id {e} has no group in its data") from None


def runs_women_interval(runs: list[dict], group_lookup, *, seed: int = 0, n_boot: int = 2000) -> tuple:
    """95% interval of the mean test AUC over runs, resampling runs and, inside each, its test women
    (`metrics.hierarchical_bootstrap_ci`); group_lookup(config) -> {id: group}."""
    from cervix_jax import metrics as M
    tuples = []
    for r in runs:
        test = r["scores"]["test"]
        tuples.append((np.asarray(test["score"], np.float64), np.asarray(test["label"]),
                       test_groups(r, test["id"], group_lookup)))
    ci = M.hierarchical_bootstrap_ci(M.auc, tuples, n_boot=n_boot, seed=seed)
    return ci["low"], ci["high"]


def table1(runs: list[dict], seed: int = 0, group_lookup=None) -> list[dict]:
    """One row per approach: mean/sd of METRICS over runs (test at the val threshold), AUC intervals:
    resampling runs (`auc_lo`/`auc_hi`) and, with group_lookup(config) -> {id: woman}, runs and women
    (`auc_rw_lo`/`auc_rw_hi`; nan without it). Each row draws from its own generator, seeded by `seed`
    and the approach's name, so a row's intervals do not depend on which other approaches are in the
    table or of their order (Table 2's rows equal the same approaches' Table 1 rows)."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["approach"], []).append(r)
    rows = []
    for name, rs in groups.items():
        rs = sorted(rs, key=lambda r: str(r.get("dir", "")))     # the row is independent of run order
        row = {"approach": name, "annotation": "yes" if rs[0]["annotation"] else "no", "runs": len(rs)}
        for m in METRICS:
            v = np.array([r["metrics"]["test"]["at_val_threshold"][m] for r in rs], np.float64)
            row[m], row[m + "_sd"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        row["auc_lo"], row["auc_hi"] = run_bootstrap_interval(
            [r["metrics"]["test"]["at_val_threshold"]["auc"] for r in rs], rng=row_rng(seed, name))
        row["auc_rw_lo"], row["auc_rw_hi"] = (
            runs_women_interval(rs, group_lookup, seed=seed) if group_lookup else (float("nan"),) * 2)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["annotation"], -r["auc"]))


def paired_difference(runs_a: dict, runs_b: dict, group_lookup, *, seed: int = 0,
                      n_boot: int = 2000) -> Optional[dict]:
    """Test AUC of approach A minus approach B over their run pairs: `runs_a` / `runs_b` map (init seed,
    split seed) -> run, and a pair shares both, so the same test women. The 95% interval resamples run
    pairs and, inside each, the women (paired; `metrics.hierarchical_bootstrap_ci`). None when no pair
    exists. Returns {runs, estimate, low, high, per_run}; refuses pairs whose test images or labels
    differ."""
    from cervix_jax import metrics as M
    common = sorted(set(runs_a) & set(runs_b), key=str)
    if not common:
        return None
    tuples = []
    for key in common:
        ra, rb = runs_a[key], runs_b[key]
        a, b = ra["scores"]["test"], rb["scores"]["test"]
        ids = np.asarray(a["id"])
        if sorted(ids.tolist()) != sorted(np.asarray(b["id"]).tolist()):
            raise ValueError(f"{ra['dir']} and {rb['dir']}: the paired runs have different test images")
        pos_b = {int(i): k for k, i in enumerate(np.asarray(b["id"]).tolist())}
        order = np.array([pos_b[int(i)] for i in ids])
        if not np.array_equal(np.asarray(a["label"]), np.asarray(b["label"])[order]):
            raise ValueError(f"{ra['dir']} and {rb['dir']}: the paired runs label the same test images "
                             f"differently")
        tuples.append((np.asarray(a["score"], np.float64), np.asarray(b["score"], np.float64)[order],
                       np.asarray(a["label"]), test_groups(ra, ids, group_lookup)))
    ci = M.hierarchical_bootstrap_ci(M.auc, tuples, n_boot=n_boot, seed=seed)
    return {"runs": len(common), "estimate": ci["estimate"], "low": ci["low"], "high": ci["high"],
            "per_run": [float(v) for v in ci["per_run"]]}


def runs_by_pair(runs: list[dict]) -> dict[str, dict[tuple, dict]]:
    """approach -> {(init seed, split seed): run}."""
    by: dict[str, dict[tuple, dict]] = {}
    for r in runs:
        key = (r["config"].get("seed"), r["config"].get("data", {}).get("split_seed"))
        by.setdefault(r["approach"], {})[key] = r
    return by


def annotation_differences(runs: list[dict], group_lookup, *, seed: int = 0,
                           n_boot: int = 2000) -> list[dict]:
    """Each annotation-using baseline (Crop-k, the box crop) against the same network on the whole
    image (`paired_difference`). One dict per comparison: approach, reference, runs, estimate, low, high,
    per_run."""
    by = runs_by_pair(runs)
    out = []
    for name, rs in by.items():
        first = next(iter(rs.values()))
        if not first["annotation"] or first["config"]["model"]["name"] != "baseline":
            continue
        ref_name = approach({**first["config"], "model": {**first["config"]["model"], "crop": "none"}})[0]
        d = paired_difference(rs, by.get(ref_name, {}), group_lookup, seed=seed, n_boot=n_boot)
        if d is not None:
            out.append({"approach": name, "reference": ref_name, **d})
    return out


def patch_differences(runs: list[dict], group_lookup, *, seed: int = 0, n_boot: int = 2000) -> list[dict]:
    """Each patch-model approach against each annotation-free whole-image baseline (paper A's claim that
    the patch model beats them), over the run pairs they share (`paired_difference`); same dicts as
    `annotation_differences`, sorted by patch approach then reference."""
    by = runs_by_pair(runs)
    kind = {name: next(iter(rs.values())) for name, rs in by.items()}
    patch = sorted(n for n, r in kind.items() if r["config"]["model"]["name"] == "patch")
    free = sorted(n for n, r in kind.items()
                  if r["config"]["model"]["name"] == "baseline" and not r["annotation"])
    out = []
    for name in patch:
        for ref in free:
            d = paired_difference(by[name], by[ref], group_lookup, seed=seed, n_boot=n_boot)
            if d is not None:
                out.append({"approach": name, "reference": ref, **d})
    return out


ANNOTATION_COLUMNS = ("annotation-using approach", "− whole image")
PATCH_COLUMNS = ("patch-model approach", "− whole-image baseline")


def differences_markdown(diffs: list[dict], columns=ANNOTATION_COLUMNS) -> str:
    head = (f"| {columns[0]} | {columns[1]} | run pairs | test AUC difference "
            "| 95% (runs x women) | per run |\n|---|---|---|---|---|---|\n")
    return head + "\n".join(
        f"| {d['approach']} | {d['reference']} | {d['runs']} | {d['estimate']:+.3f} | "
        f"[{d['low']:+.3f}, {d['high']:+.3f}] | {', '.join(f'{v:+.3f}' for v in d['per_run'])} |"
        for d in diffs) + "\n"


METRIC_HEADER = ("accuracy | F1 | precision | recall | AUC | AUC 95% (runs) | AUC 95% (runs x women) "
                 "| 1-EER")


def metric_cells(r: dict) -> str:
    """A Table 1/2 row's metric cells (mean ± sd over runs, the two AUC intervals), as METRIC_HEADER."""
    fmt = lambda m: f"{r[m]:.3f}" + ("" if np.isnan(r[m + "_sd"]) else f" ± {r[m + '_sd']:.3f}")
    ci = lambda k: "-" if np.isnan(r[k + "_lo"]) else f"[{r[k + '_lo']:.3f}, {r[k + '_hi']:.3f}]"
    return " | ".join([fmt(m) for m in ("accuracy", "f1", "precision", "recall", "auc")]
                      + [ci("auc"), ci("auc_rw"), fmt("one_minus_eer")])


def table1_markdown(rows: list[dict]) -> str:
    head = "| approach | annotation | runs | " + METRIC_HEADER + " |\n" + "|---" * 11 + "|\n"
    lines = [f"| {r['approach']} | {r['annotation']} | {r['runs']} | " + metric_cells(r) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


def patch_grid(config: dict) -> tuple[int, int, int]:
    """(patch px, grid rows, grid columns) of a patch-model point from its config.json (the model's input
    is `data.pad_to`, cut into patch_size tiles)."""
    p = int(config["model"]["patch_size"])
    h, w = (int(v) for v in config["data"]["pad_to"])
    return p, h // p, w // p


def table2(runs: list[dict], rows: list[dict]) -> list[dict]:
    """Paper A's Table 2: the Table 1 row (`rows`, from `table1` on the same runs) of each patch size of the
    patch-model runs, plus `patch_px`, `grid` ("rows x cols") and `image` ("H x W"), sorted by patch size
    (new dicts: `rows` is left as it is). [] unless the runs hold at least two patch sizes (a point's
    config needs `model.patch_size` and `data.pad_to`)."""
    patch_runs = [r for r in runs if r["config"]["model"]["name"] == "patch"
                  and "patch_size" in r["config"]["model"] and "pad_to" in r["config"].get("data", {})]
    if len({patch_grid(r["config"])[0] for r in patch_runs}) < 2:
        return []
    config_of = {r["approach"]: r["config"] for r in patch_runs}
    out = []
    for row in rows:
        if row["approach"] in config_of:
            config = config_of[row["approach"]]
            p, gh, gw = patch_grid(config)
            h, w = config["data"]["pad_to"]
            out.append(dict(row, patch_px=p, grid=f"{gh} x {gw}", image=f"{h} x {w}"))
    return sorted(out, key=lambda r: (r["patch_px"], r["approach"]))


def table2_markdown(rows: list[dict]) -> str:
    head = ("| patch size (px) | grid | image | approach | runs | " + METRIC_HEADER + " |\n"
            + "|---" * 13 + "|\n")
    lines = [f"| {r['patch_px']} | {r['grid']} | {r['image']} | {r['approach']} | {r['runs']} | "
             + metric_cells(r) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


def write_table2_figure(runs: list[dict], rows: list[dict], out: Path) -> str:
    """table2_auc.png: test AUC against patch size, one dot per run, the mean and its intervals."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = np.arange(len(rows))
    for x, row in zip(xs, rows):
        aucs = [r["metrics"]["test"]["at_val_threshold"]["auc"] for r in runs
                if r["approach"] == row["approach"]]
        ax.scatter(np.full(len(aucs), x - 0.12), aucs, s=12, color="0.5", zorder=3,
                   label="one run" if x == 0 else None)
        for dx, key, colour, label in ((0.0, "auc", "tab:blue", "95% (runs)"),
                                       (0.12, "auc_rw", "tab:orange", "95% (runs x women)")):
            if not np.isnan(row[key + "_lo"]):     # a percentile interval need not contain the mean
                ax.vlines(x + dx, row[key + "_lo"], row[key + "_hi"], color=colour,
                          label=label if x == 0 else None)
                ax.plot([x + dx], [row["auc"]], "o", color=colour)
    ax.axhline(0.5, color="k", ls=":", lw=0.8)
    ax.set_xticks(xs, [f"{r['patch_px']} px\n{r['grid']}" for r in rows], fontsize=7)
    ax.set_ylabel("test AUC")
    ax.set_title("Table 2: patch size", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "table2_auc.png", dpi=120)
    plt.close(fig)
    return "table2_auc.png"


def normalised_metrics(rows: list[dict]) -> dict[str, np.ndarray]:
    """Fig. 4a: each metric's means divided by the best approach's (max over approaches) -> [approaches]."""
    return {m: np.array([r[m] for r in rows]) / max(max(r[m] for r in rows), 1e-12) for m in METRICS}


def mean_roc(runs: list[dict], grid: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Vertical average of the runs' test ROC curves at the FPRs of `grid` -> (fpr, mean tpr)."""
    from cervix_jax import metrics as M
    grid = np.linspace(0, 1, 101) if grid is None else grid
    tprs = []
    for r in runs:
        fpr, tpr, _ = M.roc_curve(r["scores"]["test"]["score"], r["scores"]["test"]["label"])
        tprs.append(np.interp(grid, fpr, tpr))
    return grid, np.mean(tprs, axis=0)


def write_figures(runs: list[dict], rows: list[dict], out: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    names = [r["approach"] for r in rows]
    norm = normalised_metrics(rows)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(METRICS) * max(1, len(rows)) / 3), 4 + 0.12 * len(rows)))
    width = 0.8 / len(rows)
    for i, name in enumerate(names):
        ax.bar(np.arange(len(METRICS)) + i * width, [norm[m][i] for m in METRICS], width, label=name)
    ax.set_xticks(np.arange(len(METRICS)) + 0.4 - width / 2, METRICS)
    ax.set_ylabel("metric / best approach's")
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(out / "fig4a_metrics.png", dpi=120)
    plt.close(fig)
    written.append("fig4a_metrics.png")

    fig, ax = plt.subplots(figsize=(5, 5))
    for name in names:
        rs = [r for r in runs if r["approach"] == name]
        if rs[0]["annotation"]:
            continue
        fpr, tpr = mean_roc(rs)
        auc = np.mean([r["metrics"]["test"]["at_0.5"]["auc"] for r in rs])
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (mean over runs)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="lower right")
    else:
        ax.set_title("no annotation-free approach in these sweeps", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fig4b_roc.png", dpi=120)
    plt.close(fig)
    written.append("fig4b_roc.png")

    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        rs = [r for r in runs if r["approach"] == name]
        s = np.concatenate([r["scores"]["test"]["score"] for r in rs])
        y = np.concatenate([r["scores"]["test"]["label"] for r in rs])
        for c, colour in ((0, "tab:blue"), (1, "tab:red")):
            ax.hist(s[y == c], bins=np.linspace(0, 1, 21), alpha=0.6, color=colour,
                    label=("normal" if c == 0 else "dysplasia"))
        ax.set_title(name, fontsize=7)
        ax.set_xlabel("P(dysplasia)")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "fig4c_scores.png", dpi=120)
    plt.close(fig)
    written.append("fig4c_scores.png")
    return written


def test_features(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(features [n, D], labels [n]) of a run's test images, from its best checkpoint."""
    import jax
    import ml_collections as mlc

    from cervix_jax.train.checkpoint import restore
    from cervix_jax.train.data import local_data

    config = mlc.ConfigDict(rundir.read_config(run_dir))
    data = local_data(config)
    run = restore(config, run_dir, data, which="best")
    task, variables = run.task, run.variables
    if not hasattr(task, "image_features"):
        raise TypeError(f"{run_dir}: task {task.name!r} has no image_features")
    fn = jax.jit(task.image_features)
    feats, labels = [], []
    for batch in data.eval["test"].epoch(0):
        b = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), batch)
        keep = np.asarray(b["weight"]) > 0
        feats.append(np.asarray(fn(variables["params"], variables["frozen"], b))[keep])
        labels.append(np.asarray(b["label"])[keep])
    return np.concatenate(feats), np.concatenate(labels)


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """scikit-learn's t-SNE (2-D) of standardised features; perplexity below the sample count."""
    from sklearn.manifold import TSNE
    x = (features - features.mean(0)) / (features.std(0) + 1e-8)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def write_tsne(runs: list[dict], out: Path) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    firsts = {}
    for r in runs:
        firsts.setdefault(r["approach"], r)
    fig, axes = plt.subplots(1, len(firsts), figsize=(3 * len(firsts), 3), squeeze=False)
    for ax, (name, r) in zip(axes[0], firsts.items()):
        f, y = test_features(r["dir"])
        e = tsne_embedding(f)
        for c, colour in ((0, "tab:blue"), (1, "tab:red")):
            ax.scatter(e[y == c, 0], e[y == c, 1], s=6, c=colour, label=("normal" if c == 0 else "dysplasia"))
        ax.set_title(name, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "fig4d_tsne.png", dpi=120)
    plt.close(fig)
    return "fig4d_tsne.png"


IMAGE_KEYS = ("cin_grade", "visit")   # Fig. 4e and 4f


def probability_by(scores: dict, value_by_id: dict) -> dict[int, np.ndarray]:
    """Predicted probabilities grouped by a per-image integer (CIN grade or visit, Fig. 4e/f).

    scores: {"id" [n], "score" [n]} (`rundir.read_scores`); value_by_id: id -> value. Returns
    {value: the scores of the images with that value, in id order of `scores`}, values sorted.
    """
    ids = np.asarray(scores["id"])
    missing = [int(i) for i in ids if int(i) not in value_by_id]
    if missing:
        raise KeyError(f"probability_by: {len(missing)} scored ids have no value, e.g. {missing[:5]}")
    values = np.array([int(value_by_id[int(i)]) for i in ids], np.int64)
    s = np.asarray(scores["score"], np.float64)
    return {int(v): s[values == v] for v in np.unique(values)}


def image_keys(config: dict) -> dict[str, dict[int, int]]:
    """{"cin_grade": {id: grade}, "visit": {id: visit}} of every example of a run's data (config.json's
    `data`); KeyError naming the dataset when its examples do not carry them (only synthetic v2 does)."""
    import ml_collections as mlc

    from cervix_jax.train.data import open_source
    source, index = open_source(mlc.ConfigDict(config["data"]))
    out: dict[str, dict[int, int]] = {k: {} for k in IMAGE_KEYS}
    for pos, i in enumerate(np.asarray(index["id"]).tolist()):
        example = source[pos]
        for k in IMAGE_KEYS:
            if k not in example:
                raise KeyError(f"{config['data']['name']}: examples have no {k!r} (keys: {sorted(example)}); "
                               f"Fig. 4e/f need synthetic v2 data")
            out[k][int(i)] = int(example[k])
    return out


def write_grade_visit(runs: list[dict], out: Path, lookup=image_keys) -> list[str]:
    """Fig. 4e (probability by CIN grade) and 4f (by visit, per class) of the runs' test images.

    lookup(config) -> {"cin_grade": {id: v}, "visit": {id: v}} (default `image_keys`, cached per data
    config)."""

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lookup = cached_per_data(lookup)
    names = list(dict.fromkeys(r["approach"] for r in runs))
    per: dict[str, dict[str, list]] = {}
    for r in runs:
        keys = lookup(r["config"])
        test = r["scores"]["test"]
        p = per.setdefault(r["approach"], {"score": [], "label": [], "cin_grade": [], "visit": []})
        p["score"].append(np.asarray(test["score"], np.float64))
        p["label"].append(np.asarray(test["label"], np.int64))
        for k in IMAGE_KEYS:
            p[k].append(np.array([keys[k][int(i)] for i in test["id"]], np.int64))
    per = {n: {k: np.concatenate(v) for k, v in p.items()} for n, p in per.items()}

    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        p = per[name]
        groups = probability_by({"id": np.arange(len(p["score"])), "score": p["score"]},
                                dict(enumerate(p["cin_grade"].tolist())))
        ax.boxplot([groups[g] for g in groups], positions=list(groups), widths=0.6)
        ax.set_xlabel("CIN grade")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name, fontsize=7)
    axes[0][0].set_ylabel("P(dysplasia), test images")
    fig.tight_layout()
    fig.savefig(out / "fig4e_grade.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        p = per[name]
        for c, colour in ((0, "tab:blue"), (1, "tab:red")):
            keep = p["label"] == c
            if not keep.any():
                continue
            groups = probability_by({"id": np.flatnonzero(keep), "score": p["score"][keep]},
                                    dict(enumerate(p["visit"].tolist())))
            ax.errorbar(list(groups), [g.mean() for g in groups.values()],
                        yerr=[g.std() for g in groups.values()], color=colour, marker="o", capsize=3,
                        label=("normal" if c == 0 else "dysplasia"))
        ax.set_xlabel("visit")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(name, fontsize=7)
    axes[0][0].set_ylabel("P(dysplasia): mean ± sd")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "fig4f_visit.png", dpi=120)
    plt.close(fig)
    return ["fig4e_grade.png", "fig4f_visit.png"]


def area_matched_centre_region(area_fraction: float, shape: tuple[int, int]) -> np.ndarray:
    """The regulator ablation's shape control: the centred ellipse (the image's aspect, i.e. the
    top level set of the initial centred regulator) covering `area_fraction` of an [h, w] image,
    as a bool mask: the pixels ranked by ((x - cx) / w)^2 + ((y - cy) / h)^2, the first
    round(area_fraction h w) kept. A weight map whose above-cut area is a, compared with this
    region of area a, tells how much of its IoU with the cervix a compact centred blob gets anyway."""
    h, w = shape
    ys, xs = np.mgrid[0:h, 0:w]
    d = ((xs - (w - 1) / 2) / w) ** 2 + ((ys - (h - 1) / 2) / h) ** 2
    n = int(round(float(np.clip(area_fraction, 0, 1)) * h * w))
    region = np.zeros(h * w, bool)
    region[np.argsort(d.ravel(), kind="stable")[:n]] = True
    return region.reshape(h, w)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def write(config, workdir) -> dict:
    """The report-registry entry (`config.sweep.reports = (..., "paper_a_table1")`): Table 1 and
    Fig. 4 a-c of this one sweep, into its workdir. Across sweeps use `write_many` (the CLI)."""
    del config
    return write_many(workdir, [workdir])


def write_many(out_dir, workdirs, *, tsne: bool = False, lookup=image_keys, group_lookup=groups_of) -> dict:
    """Table 1 and Fig. 4 (a-c, e-f when the data carry CIN grade and visit, d with tsne) of the
    points of several sweeps into out_dir. `lookup`: see `write_grade_visit`; `group_lookup`: see
    `table1` (left out, with a note, when a point's config.json has no data section)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = choose_k(collect(workdirs))
    notes = []
    has_data = all("data" in r["config"] for r in runs)
    if not has_data:
        group_lookup = None
        notes.append("AUC 95% (runs x women) left out: a point's config.json has no data section")
    elif group_lookup is not None:
        group_lookup = cached_per_data(group_lookup)
    rows = table1(runs, group_lookup=group_lookup)
    (out / "table1.md").write_text(table1_markdown(rows))
    with (out / "table1.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    written = ["table1.md", "table1.csv"] + write_figures(runs, rows, out)
    rows2 = table2(runs, rows)
    if rows2:
        (out / "table2.md").write_text(table2_markdown(rows2))
        written += ["table2.md", write_table2_figure(runs, rows2, out)]
    diffs = annotation_differences(runs, group_lookup) if group_lookup else []
    patch_diffs = patch_differences(runs, group_lookup) if group_lookup else []
    if diffs or patch_diffs:
        text = differences_markdown(diffs) if diffs else ""
        if patch_diffs:
            text += ("\n" if text else "") + differences_markdown(patch_diffs, PATCH_COLUMNS)
        (out / "table1_differences.md").write_text(text)
        written.append("table1_differences.md")
    if has_data:
        try:
            written += write_grade_visit(runs, out, lookup)
        except KeyError as e:
            notes.append(f"Fig. 4e/f left out: {e}")
    else:
        notes.append("Fig. 4e/f left out: a point's config.json has no data section")
    if tsne:
        written.append(write_tsne(runs, out))
    return {"out": str(out), "written": written, "rows": rows, "table2": rows2, "differences": diffs,
            "patch_differences": patch_diffs,
            "notes": notes}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("workdirs", nargs="+")
    p.add_argument("--tsne", action="store_true", help="Fig. 4d (restores a checkpoint per approach)")
    a = p.parse_args(argv)
    result = write_many(a.out_dir, a.workdirs, tsne=a.tsne)
    print(table1_markdown(result["rows"]))
    if result["table2"]:
        print(table2_markdown(result["table2"]))
    if result["differences"]:
        print(differences_markdown(result["differences"]))
    if result["patch_differences"]:
        print(differences_markdown(result["patch_differences"], PATCH_COLUMNS))
    for note in result["notes"]:
        print(note)
    return result


if __name__ == "__main__":
    main()
