"""Paper B end to end over several splits: stage 1 per split, the seven heads on its frozen features and
on the random-initialised control, CAM vs CRM, and the paper's claims with intervals over runs and women.

    python -m cervix_jax.reports.paper_b_evidence --workdir runs/paper_b_evidence --splits 0,1,2

For every split seed s (`data.split_seed`: which women are train / val / test) it runs, through
`launch.py` (each command printed; a step whose outputs exist is skipped, so a rerun resumes):

    launch.py train + eval --config <stage1>        --workdir W/split<s>/stage1  (stage 1 on s's train women)
    launch.py sweep --config <heads> ... backbone_checkpoint=W/split<s>/stage1   --workdir W/split<s>/heads
    launch.py sweep --config <heads> ... + model.backbone_random=True           --workdir W/split<s>/random

(`<stage1>` = configs/retinanet.py:demo and `<heads>` = configs/pyramid.py:sweep,small by default: the
seven heads x head seeds 0, 1, 2 x test blur 0 and paper B's 19 / 49 scaled to the image size; the
`heads` sweep also writes the paper_b_maps report). Stage 1 sees only its split's training (and, for
model selection, validation) women; config validation refuses a stage-2 run on another split.

Then `write_report` reads every run back (`rundir`) and writes W/paper_b_evidence.{md,json} and
W/paper_b_heads.png. A run is one (split, head seed) pair; intervals are `metrics.hierarchical_bootstrap_ci`
(runs drawn with replacement, then inside every drawn run its test women), 95 %, 1,000 resamples.
Accuracy and F1 are at each run's validation-chosen threshold; AUC is threshold-free.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from cervix_jax import metrics as M
from cervix_jax.models import pyramid
from cervix_jax.reports.paper_b_table import REFERENCE_HEAD, head_label
from cervix_jax.train import rundir
from cervix_jax.train.config import load_config
from cervix_jax.train.data import groups_by_id
from cervix_jax.train.sweep import grid_points, point_name

ROOT = Path(__file__).resolve().parents[2]
ARMS = ("heads", "random")  # on the stage-1 backbone; on the same architecture, random
ARM_NAMES = {"heads": "stage-1 backbone", "random": "random backbone (control)"}
N_BOOT = 1000


# ---------------------------------------------------------------------------------------------- running
def commands(workdir: Path, split: int, stage1: str, heads: str, extra: Sequence[str] = ()) -> list:
    """[(done-marker path, argv)] for one split, in order."""
    py = [sys.executable, str(ROOT / "launch.py")]
    d = workdir / f"split{split}"
    s1 = ["--config", stage1, "--workdir", str(d / "stage1"), f"--config.data.split_seed={split}"]
    head = [
        "--config",
        heads,
        f"--config.data.split_seed={split}",
        "--config.data.normalization=caffe",
        f"--config.model.backbone_checkpoint={d / 'stage1'}",
        *extra,
    ]
    return [
        (d / "stage1" / "train_summary.json", py + ["train", *s1]),
        (d / "stage1" / "eval" / "metrics.json", py + ["eval", *s1]),
        (d / "heads" / "maps" / "maps.md", py + ["sweep", *head, "--workdir", str(d / "heads")]),
        (
            d / "random" / "maps" / "maps.md",
            py + ["sweep", *head, "--config.model.backbone_random=True", "--workdir", str(d / "random")],
        ),
    ]


def run_all(workdir: Path, splits: Sequence[int], stage1: str, heads: str, extra: Sequence[str] = ()) -> dict:
    """Runs every missing step (module docstring); returns {step: wall seconds} of the steps run."""
    times = {}
    for split in splits:
        for marker, argv in commands(workdir, split, stage1, heads, extra):
            if marker.exists():
                print(f"[paper_b_evidence] done already: {marker}", flush=True)
                continue
            print("[paper_b_evidence] $ " + shlex.join(argv[1:]), flush=True)
            start = time.time()
            subprocess.run(argv, check=True, cwd=ROOT)
            times[f"split{split} {argv[2]} {Path(argv[argv.index('--workdir') + 1]).name}"] = (
                time.time() - start
            )
    return times


# ---------------------------------------------------------------------------------------------- reading
def _resolve(spec: str) -> str:
    """A config spec relative to the working directory, else to the repository root."""
    path, _, arg = spec.partition(":")
    if not Path(path).exists() and (ROOT / path).exists():
        path = str(ROOT / path)
    return f"{path}:{arg}" if arg else path


def _scores_at(pdir: Path, split: str = "test") -> dict:
    m = rundir.read_eval(pdir)
    s = rundir.read_scores(pdir, split)
    return {
        "id": s["id"],
        "label": s["label"],
        "score": s["score"],
        "threshold": m["thresholds"]["val_chosen"],
        "metrics": m[split]["at_val_threshold"],
        "detection": m.get("detection"),
    }


def collect(workdir: Path, splits: Sequence[int], heads_config: str) -> dict:
    """Every run's test scores: {"stage1": {split: rec}, "points": {(arm, head, blur): {(split, seed): rec}},
    "groups": {split: {id: woman}}, "maps": {split: rows of heads/maps/per_image.csv}}."""
    out = {"stage1": {}, "points": {}, "groups": {}, "maps": {}}
    for split in splits:
        d = workdir / f"split{split}"
        out["stage1"][split] = _scores_at(d / "stage1")
        config = load_config(_resolve(heads_config))
        config.data.split_seed = split
        out["groups"][split] = groups_by_id(config.data)
        for arm in ARMS:
            for p in grid_points(config):
                pdir = d / arm / "points" / point_name(p)
                if not rundir.eval_done(pdir):
                    raise FileNotFoundError(f"{pdir}: no eval/metrics.json; run the evidence first")
                head = pyramid.parse_levels(p["model.levels"])
                key = (arm, head_label(head), int(p.get("data.blur", 0)))
                out["points"].setdefault(key, {})[(split, int(p.get("seed", 0)))] = _scores_at(pdir)
        maps = d / "heads" / "maps" / "per_image.csv"
        if maps.exists():
            import csv

            with maps.open() as f:
                out["maps"][split] = list(csv.DictReader(f))
    return out


# ---------------------------------------------------------------------------------------------- statistics
def accuracy_of(pred, labels) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(labels)))


def f1_of(pred, labels) -> float:
    pred, labels = np.asarray(pred), np.asarray(labels)
    tp = np.sum((pred == 1) & (labels == 1))
    den = np.sum(pred == 1) + np.sum(labels == 1)
    return float(2 * tp / den) if den else float("nan")


def _pred(rec) -> np.ndarray:
    return (rec["score"] >= rec["threshold"]).astype(np.int64)


def _groups(rec, group_of) -> np.ndarray:
    return np.array([group_of[int(i)] for i in rec["id"]])


METRICS = {"accuracy": (accuracy_of, _pred), "f1": (f1_of, _pred), "auc": (M.auc, lambda r: r["score"])}


def interval(runs: dict, groups: dict, metric: str, *, other: Optional[dict] = None, seed: int = 0) -> dict:
    """Hierarchical interval of `metric` over `runs` {(split, seed): rec}; with `other` (same keys, or
    keys (split, *) matched by split when `other` is per split), the paired difference runs - other."""
    fn, view = METRICS[metric]
    tuples = []
    for key in sorted(runs):
        a = runs[key]
        g = _groups(a, groups[key[0]])
        if other is None:
            tuples.append((view(a), a["label"], g))
            continue
        b = other.get(key, other.get(key[0]))
        if b is None or not np.array_equal(a["id"], b["id"]):
            raise ValueError(
                f"paper_b_evidence: run {key}: the two arms were not scored on the same test images"
            )
        tuples.append((view(a), view(b), a["label"], g))
    return M.hierarchical_bootstrap_ci(fn, tuples, n_boot=N_BOOT, seed=seed)


def verdict(diff: dict, *, higher_is_claim: bool = True) -> str:
    """ "reproduced" when the interval of (claim - alternative) excludes 0 on the claimed side,
    "refuted" when it excludes 0 on the other side, else "undecided"."""
    low, high = (diff["low"], diff["high"]) if higher_is_claim else (-diff["high"], -diff["low"])
    if low > 0:
        return "reproduced"
    if high < 0:
        return "refuted"
    return "undecided"


def analyse(data: dict) -> dict:
    """Tables and claims (see write_report) from `collect`'s records."""
    groups = data["groups"]
    stage1 = {(s, 0): rec for s, rec in data["stage1"].items()}
    res = {"stage1": {"per_split": {}, "intervals": {}}, "heads": [], "claims": {}}
    for s, rec in data["stage1"].items():
        res["stage1"]["per_split"][s] = {
            **{k: rec["metrics"][k] for k in ("accuracy", "f1", "auc")},
            **{k: (rec["detection"] or {}).get(k) for k in ("AP50", "AP", "top_iou_mean")},
        }
    for m in METRICS:
        res["stage1"]["intervals"][m] = interval(stage1, groups, m)
    blurs = sorted({k[2] for k in data["points"]})
    clean = blurs[0]
    heads = list(dict.fromkeys(k[1] for k in data["points"]))
    for arm in ARMS:
        for head in heads:
            for blur in blurs:
                runs = data["points"][(arm, head, blur)]
                row = {"arm": arm, "head": head, "blur": blur, "runs": len(runs)}
                for m in METRICS:
                    row[m] = interval(runs, groups, m)
                res["heads"].append(row)
    ref = head_label(REFERENCE_HEAD)
    pts = data["points"]
    claims = res["claims"]
    # 1. P3+P6+P7 beats every other head (clean, stage-1 backbone)
    claims["p3p6p7_best"] = {
        h: {
            m: interval(pts[("heads", ref, clean)], groups, m, other=pts[("heads", h, clean)])
            for m in ("accuracy", "auc")
        }
        for h in heads
        if h != ref
    }
    # 2. the pyramid heads beat the RetinaNet's own image-level score (clean, same test images)
    per_split = data["stage1"]
    claims["heads_beat_retinanet"] = {
        h: {m: interval(pts[("heads", h, clean)], groups, m, other=per_split) for m in ("accuracy", "auc")}
        for h in heads
    }
    # 3. blur hurts: clean minus blurred, same head and run
    claims["blur_hurts"] = {
        (h, b): {
            m: interval(pts[("heads", h, clean)], groups, m, other=pts[("heads", h, b)])
            for m in ("accuracy", "auc")
        }
        for h in heads
        for b in blurs
        if b != clean
    }
    # control: the stage-1 backbone beats the random one
    claims["stage1_beats_random"] = {
        h: {
            m: interval(pts[("heads", h, clean)], groups, m, other=pts[("random", h, clean)])
            for m in ("accuracy", "auc")
        }
        for h in heads
    }
    res["maps"] = analyse_maps(data["maps"], groups) if data["maps"] else None
    return res


MAP_METRICS = (
    "roi_area",
    "pointing_game_lesion",
    "iou_lesion",
    "pointing_game_os",
    "iou_os",
    "pointing_game_cervix",
    "iou_cervix",
)
DIFF_METRICS = ("roi_area", "pointing_game_lesion", "iou_lesion", "pointing_game_os")


def _nanmean(values, _labels=None) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _mean_interval(runs: list) -> dict:
    """Hierarchical interval of the mean of a per-image map metric; images without a value (no lesion
    mask) are left out of their run, runs without any value are left out."""
    kept = []
    for values, labels, groups, _ in runs:
        keep = np.isfinite(values)
        if keep.any():
            kept.append((values[keep], labels[keep], groups[keep]))
    if not kept:
        return {"estimate": float("nan"), "low": float("nan"), "high": float("nan"), "n_boot": 0}
    return M.hierarchical_bootstrap_ci(_nanmean, kept, n_boot=N_BOOT)


def analyse_maps(maps: dict, groups: dict) -> dict:
    """Per (head, blur, method): each map metric's mean over splits (runs = splits, head seed 0) with a
    hierarchical interval; ROI area per class; and paired differences (same images): crm_linear - cam
    and crm_linear - crm (softmax space) per head and blur, and blurred - clean per head for
    crm_linear and cam (paper B Fig. 8), each for ROI area (all, and per class), pointing game against
    the lesion and the os, IoU against the lesion."""
    rows = [dict(r, split=s) for s, rs in maps.items() for r in rs]
    keys = list(dict.fromkeys((r["head"], int(r["blur"]), r["method"]) for r in rows))
    out = {"table": [], "diffs": []}

    def per_split(head, blur, method, metric, label=None):
        runs = []
        for s in maps:
            sel = [
                r
                for r in rows
                if r["split"] == s
                and (r["head"], int(r["blur"]), r["method"]) == (head, blur, method)
                and (label is None or int(r["label"]) == label)
            ]
            if sel:
                runs.append(
                    (
                        np.array([float(r[metric]) for r in sel]),
                        np.array([int(r["label"]) for r in sel]),
                        np.array([groups[s][int(r["id"])] for r in sel]),
                        np.array([int(r["id"]) for r in sel]),
                    )
                )
        return runs

    for head, blur, method in keys:
        row = {"head": head, "blur": blur, "method": method}
        for metric in MAP_METRICS:
            row[metric] = _mean_interval(per_split(head, blur, method, metric))
        for c in (0, 1):
            row[f"roi_area_class{c}"] = _mean_interval(per_split(head, blur, method, "roi_area", label=c))
        out["table"].append(row)
    methods = list(dict.fromkeys(k[2] for k in keys))
    blurs = sorted({k[1] for k in keys})

    def paired(akey, bkey, metric, label=None):
        tuples = []
        for x, y in zip(per_split(*akey, metric, label), per_split(*bkey, metric, label)):
            if not np.array_equal(x[3], y[3]):
                raise ValueError("paper_b_evidence: two maps' rows are not on the same images")
            keep = np.isfinite(x[0]) & np.isfinite(y[0])
            if keep.any():
                tuples.append((x[0][keep], y[0][keep], x[1][keep], x[2][keep]))
        if not tuples:
            return {"estimate": float("nan"), "low": float("nan"), "high": float("nan")}
        return M.hierarchical_bootstrap_ci(_nanmean, tuples, n_boot=N_BOOT)

    pairs = []
    for a, b in (("crm_linear", "cam"), ("crm_linear", "crm")):  # method against method
        if a in methods and b in methods:
            pairs += [
                ((h, k, a), (h, k, b), f"{a} − {b}") for h, k in dict.fromkeys((x[0], x[1]) for x in keys)
            ]
    for method in ("crm_linear", "cam"):  # blurred against clean (Fig. 8)
        if method in methods:
            pairs += [
                ((h, k, method), (h, blurs[0], method), f"{method}: blur {k} − clean")
                for h in dict.fromkeys(x[0] for x in keys)
                for k in blurs[1:]
            ]
    for akey, bkey, name in pairs:
        row = {"head": akey[0], "blur": akey[1], "a": akey[2], "b": bkey[2], "name": name}
        for metric in DIFF_METRICS:
            row[metric] = paired(akey, bkey, metric)
        for c in (0, 1):
            row[f"roi_area_class{c}"] = paired(akey, bkey, "roi_area", label=c)
        out["diffs"].append(row)
    return out


# ---------------------------------------------------------------------------------------------- writing
def _iv(d: dict, digits: int = 3, signed: bool = False) -> str:
    if d is None or not np.isfinite(d["estimate"]):
        return "n/a"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    return f"{f.format(d['estimate'])} [{f.format(d['low'])}, {f.format(d['high'])}]"


def markdown(res: dict, meta: dict) -> str:
    L = [
        f"# Paper B evidence over {len(res['stage1']['per_split'])} splits",
        "",
        f"Stage 1 `{meta['stage1']}`, heads `{meta['heads']}`; splits {meta['splits']}. A run = one (split, "
        "head seed); value [95 % interval resampling runs, then women within each run].",
        "",
        "## Stage 1: the RetinaNet's own image-level row and cervix-box detection (test split)",
        "",
        "| split | accuracy | F1 | AUC | box AP50 | box AP | top-box IoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, r in res["stage1"]["per_split"].items():
        L.append(
            f"| {s} | "
            + " | ".join(
                "n/a" if r[k] is None else f"{r[k]:.3f}"
                for k in ("accuracy", "f1", "auc", "AP50", "AP", "top_iou_mean")
            )
            + " |"
        )
    iv = res["stage1"]["intervals"]
    L.append(f"| all | {_iv(iv['accuracy'])} | {_iv(iv['f1'])} | {_iv(iv['auc'])} | | | |")
    L += [
        "",
        "## The seven heads (Table 2 / Table 4 format)",
        "",
        "| backbone | head | blur | runs | accuracy | F1 | AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["heads"]:
        L.append(
            f"| {ARM_NAMES[r['arm']]} | {r['head']} | {r['blur']} | {r['runs']} | {_iv(r['accuracy'])} | "
            f"{_iv(r['f1'])} | {_iv(r['auc'])} |"
        )
    c = res["claims"]
    L += [
        "",
        "## Claims (paired differences, claim side positive)",
        "",
        "| claim | comparison | Δ accuracy | Δ AUC | verdict (AUC) |",
        "|---|---|---|---|---|",
    ]
    for name, title, fmt in (
        ("p3p6p7_best", "P3+P6+P7 beats the head", lambda k: f"P3+P6+P7 − {k}"),
        ("heads_beat_retinanet", "head beats the RetinaNet's own score", lambda k: f"{k} − RetinaNet"),
        ("blur_hurts", "blur lowers the head's score", lambda k: f"{k[0]}: clean − blur {k[1]}"),
        ("stage1_beats_random", "control: stage-1 backbone beats random", lambda k: f"{k}: stage-1 − random"),
    ):
        for k, d in c[name].items():
            L.append(
                f"| {title} | {fmt(k)} | {_iv(d['accuracy'], signed=True)} | {_iv(d['auc'], signed=True)} | "
                f"{verdict(d['auc'])} |"
            )
    if res.get("maps"):
        L += [
            "",
            "## CAM vs CRM per head (head seed 0, mean over splits)",
            "",
            "| head | blur | method | ROI area | ROI area (treatable) | ROI area (not treatable) | "
            "pointing game (lesion) | IoU (lesion) | pointing game (os) | pointing game (cervix) | "
            "IoU (cervix) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        keys = (
            "roi_area",
            "roi_area_class0",
            "roi_area_class1",
            "pointing_game_lesion",
            "iou_lesion",
            "pointing_game_os",
            "pointing_game_cervix",
            "iou_cervix",
        )
        for r in res["maps"]["table"]:
            L.append(
                f"| {r['head']} | {r['blur']} | {r['method']} | " + " | ".join(_iv(r[k]) for k in keys) + " |"
            )
        L += [
            "",
            "Paired differences on the same images (a − b):",
            "",
            "| head | difference | Δ ROI area | Δ ROI area (treatable) | Δ ROI area (not treatable) | "
            "Δ pointing game (lesion) | Δ IoU (lesion) | Δ pointing game (os) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        keys = keys[:6]  # the differences: ROI areas, lesion pointing and IoU, os pointing
        for r in res["maps"]["diffs"]:
            name = r["name"] if "blur" in r["name"] else f"{r['name']} (blur {r['blur']})"
            L.append(f"| {r['head']} | {name} | " + " | ".join(_iv(r[k], signed=True) for k in keys) + " |")
    return "\n".join(L) + "\n"


def figure(res: dict, path: Path) -> None:
    """AUC per head with its interval: stage-1 vs random backbone, per blur level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = list(dict.fromkeys(r["head"] for r in res["heads"]))
    blurs = sorted({r["blur"] for r in res["heads"]})
    fig, axes = plt.subplots(1, len(blurs), figsize=(4.2 * len(blurs), 3.6), sharey=True, squeeze=False)
    for ax, blur in zip(axes[0], blurs):
        for j, arm in enumerate(ARMS):
            rows = [
                next(r for r in res["heads"] if (r["arm"], r["head"], r["blur"]) == (arm, h, blur))
                for h in heads
            ]
            x = np.arange(len(heads)) + (j - 0.5) * 0.3
            est = np.array([r["auc"]["estimate"] for r in rows])
            err = np.array([[e - r["auc"]["low"], r["auc"]["high"] - e] for e, r in zip(est, rows)]).T
            err = np.nan_to_num(np.maximum(err, 0.0))  # a percentile interval may sit beside its estimate
            ax.errorbar(x, est, yerr=err, fmt="o", capsize=3, label=ARM_NAMES[arm])
        s1 = res["stage1"]["intervals"]["auc"]["estimate"]
        ax.axhline(s1, color="grey", ls="--", lw=1, label="RetinaNet's own score (clean)")
        ax.axhline(0.5, color="black", lw=0.5)
        ax.set_xticks(np.arange(len(heads)), heads, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"test blur {blur}" if blur else "clean test images", fontsize=10)
    axes[0][0].set_ylabel("test AUC")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {
            (
                k if isinstance(k, str) else " ".join(map(str, k)) if isinstance(k, tuple) else str(k)
            ): _jsonable(v)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def write_report(
    workdir: Path, splits: Sequence[int], stage1: str, heads: str, times: Optional[dict] = None
) -> dict:
    res = analyse(collect(workdir, splits, heads))
    meta = {"stage1": stage1, "heads": heads, "splits": list(splits), "times_s": times or {}}
    (workdir / "paper_b_evidence.md").write_text(markdown(res, meta))
    (workdir / "paper_b_evidence.json").write_text(
        rundir.strict_dumps(_jsonable({"meta": meta, **res}), indent=1)
    )
    figure(res, workdir / "paper_b_heads.png")
    return res


def main(argv=None) -> dict:
    global N_BOOT
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True, type=Path)
    ap.add_argument("--splits", default="0,1,2", help="comma-separated data.split_seed values")
    ap.add_argument("--stage1", default="configs/retinanet.py:demo", help="stage-1 config")
    ap.add_argument("--heads", default="configs/pyramid.py:sweep,small", help="stage-2 sweep config")
    ap.add_argument("--report-only", action="store_true", help="only read the runs and write the report")
    ap.add_argument("--n-boot", type=int, default=N_BOOT, help="bootstrap resamples per interval")
    ap.add_argument("extra", nargs="*", help="further --config.* flags for both stage-2 sweeps")
    args = ap.parse_args(argv)
    N_BOOT = args.n_boot
    splits = [int(s) for s in args.splits.split(",") if s]
    args.workdir.mkdir(parents=True, exist_ok=True)
    times = {} if args.report_only else run_all(args.workdir, splits, args.stage1, args.heads, args.extra)
    res = write_report(args.workdir, splits, args.stage1, args.heads, times)
    print((args.workdir / "paper_b_evidence.md").read_text())
    return res


if __name__ == "__main__":
    main()
