"""Does the spatial regulator move paper A's patch weights onto the cervix? (paper A Fig. 5c;
docs/results/paper_a.md)

Reads the workdirs of the engine's sweep (no training loop of its own); `launch.py sweep` runs it at
the end of the sweep (configs/patch.py:evidence names it in config.sweep.reports), `launch.py report`
on an existing workdir, and scripts/regulator_evidence.py adds extra arms (other sweeps):

    python launch.py sweep --config configs/patch.py:evidence --workdir runs/paper_a_evidence
    python launch.py report --config configs/patch.py:evidence --workdir runs/paper_a_evidence

For every point (model.regulator x seed) it
  * runs the engine's explainer on the test split if `explain/test/index.json` is missing (the same
    code as `launch.py explain --config configs/patch.py:evidence --workdir <point>
    --config.model.regulator=<mode> --config.seed=<seed>`; method "weights" = the patch-weight map),
    and reads the per-image `pointing_game_cervix`, `iou_cervix` (max-normalised map, cut at
    config.explain.threshold) and `roi_area` (share of the image above that cut: how broad the map
    is) of method "weights" (best checkpoint by config.train.best_metric);
  * adds the weight mass on the cervix, sum(a * cervix share of the patch) / sum(a), on the same
    test images and checkpoint (threshold-free);
  * reads test AUC and balanced accuracy (at the validation-chosen threshold) from eval/metrics.json;
  * restores the LAST checkpoint (end of training) and measures, over ALL training images, the
    regulator centre error |mu - c| (patch units; c = centroid of the visible cervix mask) and the
    weight-map centre error |fit_gaussian(a).mu - c|; the regulator starts at the grid centre
    (the "init" column; "none" and "fixed" keep it);
  * reads regulator_history.npz (4 tracked training images, every epoch) for the per-epoch curve.

Then per mode mean ± sd over seeds, and paired differences (iterative - none, iterative - fixed,
fixed - none): per-image metrics are averaged over the seeds per image and bootstrapped by group
(woman) with `cervix_jax.metrics.paired_bootstrap_diff` (same images, same resamples for both
modes); classification metrics are paired per seed (mean and the per-seed values; 3 seeds give
no useful interval). Writes WORKDIR/regulator_evidence.{json,md}.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from cervix_jax import regulator
from cervix_jax.review.server import read_index
from cervix_jax.metrics import paired_bootstrap_diff
from cervix_jax.train import rundir
from cervix_jax.train.checkpoint import restore
from cervix_jax.train.data import groups_by_id, local_data
from cervix_jax.train.evaluate import explain_split
from cervix_jax.train.sweep import grid_points, point_config, point_name

MODES = ("none", "fixed", "iterative")
PAIRS = (("iterative", "none"), ("iterative", "fixed"), ("fixed", "none"))
MAP_METRICS = ("pointing_game_cervix", "iou_cervix", "roi_area", "mass_cervix")   # per test image
TRAIN_METRICS = ("reg_err", "weight_err")                             # per training image


def mask_centres(masks: np.ndarray, patch: int) -> np.ndarray:
    """[n, H, W] masks -> [n, 2] centroid (x, y) in patch-grid units (`regulator.mask_centre`)."""
    return np.array([regulator.mask_centre(m, patch) for m in masks], np.float64).reshape(len(masks), 2)


def patch_share(masks: np.ndarray, patch: int) -> np.ndarray:
    """[n, H, W] masks -> [n, gh, gw] share of each patch covered by the mask."""
    n, h, w = masks.shape
    return (masks > 0).reshape(n, h // patch, patch, w // patch, patch).mean((2, 4))


def patch_weights(task, params, images: np.ndarray, batch: int = 32) -> np.ndarray:
    import jax
    fwd = jax.jit(task.forward)
    return np.concatenate([np.asarray(fwd(params, images[i:i + batch])[1])
                           for i in range(0, len(images), batch)])


def weights_and_regulator(config, pdir: Path, data, train_ex, test_ex) -> dict:
    """Per image: the weight mass on the cervix, sum(a * cervix share of the patch) / sum(a), and the
    cervix's area share of the image, on `test_ex` at the best checkpoint (the explainer's); and, over
    `train_ex` at the last checkpoint, the regulator centre error |mu - c| at the start ("init_err": the
    grid centre) and at the end ("reg_err"), the weight-map centre error |fit_gaussian(a).mu - c| and
    how far the regulator moved (patch units; c = centroid of the visible cervix mask)."""
    p = int(config.model.patch_size)
    out = {}
    run = restore(config, pdir, data, which="best")
    task, best = run.task, run.state
    a = patch_weights(task, best.params, np.stack([e["image"] for e in test_ex]))
    share = patch_share(np.stack([e["cervix_mask"] for e in test_ex]), p)
    out["mass_cervix"] = ((a * share).sum((1, 2)) / np.maximum(a.sum((1, 2)), 1e-12)).tolist()
    out["area_share"] = share.mean((1, 2)).tolist()
    out["best_step"] = int(best.step)

    # Regulator and weight-map centres on ALL training images, at the end of training.
    run = restore(config, pdir, data, which="last")
    task, last = run.task, run.state
    ids = np.array([e["id"] for e in train_ex])
    centres = mask_centres(np.stack([e["cervix_mask"] for e in train_ex]), p)
    mu0, _ = regulator.init_regulator(task.grid_for(data.image_shape))
    mu = (np.broadcast_to(np.asarray(mu0), (len(ids), 2)) if last.example_state is None
          else np.asarray(last.example_state["mu"])[ids])
    a = patch_weights(task, last.params, np.stack([e["image"] for e in train_ex]))
    fit_mu = np.stack([np.asarray(regulator.fit_gaussian(w)[0]) for w in a])
    out["init_err"] = np.linalg.norm(np.asarray(mu0)[None] - centres, axis=1).tolist()
    out["reg_err"] = np.linalg.norm(mu - centres, axis=1).tolist()
    out["weight_err"] = np.linalg.norm(fit_mu - centres, axis=1).tolist()
    out["last_step"] = int(last.step)
    out["reg_moved"] = np.linalg.norm(mu - np.asarray(mu0)[None], axis=1).tolist()
    return out


def measure_point(config, pdir: Path, data, train_ex, test_ex, explain: bool) -> dict:
    p = int(config.model.patch_size)
    out_dir = pdir / "explain" / config.explain.split
    index_path = out_dir / "index.json"
    if not index_path.exists():
        if not explain:
            raise FileNotFoundError(f"{index_path}: no explanations; run the report with explain=True "
                                    f"(it writes them there, as the sweep's owner)")
        t0 = time.time()
        explain_split(config, pdir, out_dir=out_dir)
        print(f"  explained {pdir.name} in {time.time() - t0:.0f} s", flush=True)
    index = read_index(out_dir)
    per_image = {int(it["id"]): it["metrics"]["weights"] for it in index["items"]}

    out = {"test_ids": [int(e["id"]) for e in test_ex]}
    for k in ("pointing_game_cervix", "iou_cervix", "roi_area"):
        out[k] = [np.nan if per_image[i][k] is None else float(per_image[i][k]) for i in out["test_ids"]]

    out.update(weights_and_regulator(config, pdir, data, train_ex, test_ex))

    # Classification (test, val-chosen threshold; AUC does not depend on the threshold).
    m = rundir.read_eval(pdir)["test"]["at_val_threshold"]
    out["auc"], out["balanced_accuracy"] = float(m["auc"]), float(m["balanced_accuracy"])

    # Refit acceptance in the last epoch, and the per-epoch curve of the 4 tracked images.
    rows = rundir.read_metrics(pdir)
    last_epoch = max(r.get("epoch", 0) for r in rows)
    valid = [r["refit_valid"] for r in rows if r.get("split") == "train" and "refit_valid" in r
             and r.get("epoch") == last_epoch]
    out["refit_valid_last_epoch"] = (float(np.mean(valid)) if valid and config.model.regulator == "iterative"
                                     else None)
    val_auc = [r["val_auc"] for r in rows if r.get("split") == "val"]
    hit = [e for e, v in enumerate(val_auc) if v >= 0.9]
    out["epochs_to_val_auc_0.9"] = hit[0] + 1 if hit else np.nan
    h = rundir.read_regulator_history(pdir)
    if h:
        tracked = data.examples("train", 4)
        c4 = mask_centres(np.stack([e["cervix_mask"] for e in tracked]), p)
        epochs = sorted(int(k[3:]) for k in h if k.startswith("mu_"))
        out["tracked_curve"] = {e: float(np.linalg.norm(h[f"mu_{e}"] - c4, axis=1).mean()) for e in epochs}
    return out


def mean_sd(values) -> str:
    """mean ± sd (ddof 1) of the finite values; nan values (e.g. never reached) are counted."""
    v = np.asarray(values, np.float64)
    n_nan = int(np.isnan(v).sum())
    v = v[np.isfinite(v)]
    if not len(v):
        text = "-"
    else:
        text = f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"
    return text + (f" ({n_nan} never)" if n_nan else "")


def find_point(workdir: Path, seed: int) -> Path | None:
    """The one point directory of an extra arm's sweep with this seed."""
    hits = [d for d in (workdir / "points").glob("*") if d.name.split("__")[-1] == f"seed={seed}"]
    if len(hits) > 1:
        raise ValueError(f"{workdir}/points: several points with seed={seed}: {[h.name for h in hits]}")
    return hits[0] if hits else None


def write(config, workdir, *, arms: Sequence[tuple[str, Path, dict]] = (), explain: bool = True,
          n_boot: int = 2000) -> dict:
    """The evidence tables of the sweep in `workdir` (see the module doc); `arms`: extra
    (label, sweep workdir, {dotted key: value}) paired with none and iterative. Returns the paths and
    the per-mode table."""
    workdir = Path(workdir)
    points = grid_points(config)
    data = local_data(point_config(config, points[0]))   # split and data do not depend on the point
    train_ex = data.examples("train", 10 ** 9)
    test_ex = data.examples(config.explain.split, config.explain.max_images)
    group_by_id = groups_by_id(config.data)

    def group_of(ids):
        return np.array([group_by_id[int(i)] for i in ids])

    # (label, seed, point config, point dir) for the sweep's points and every extra arm.
    todo = [(pt["model.regulator"], int(pt["seed"]), point_config(config, pt),
             workdir / "points" / point_name(pt)) for pt in points]
    seeds = sorted({s for _, s, _, _ in todo})
    arms = list(arms)
    for label, wd, overrides in arms:
        for seed in seeds:
            pdir = find_point(wd, seed)
            if pdir is not None:
                todo.append((label, seed, point_config(config, {**overrides, "seed": seed}), pdir))
    modes = list(MODES) + [label for label, _, _ in arms]
    pairs = list(PAIRS) + [(label, ref) for label, _, _ in arms for ref in ("iterative", "none")]

    results = []
    for label, seed, pc, pdir in todo:
        if not (pdir / "eval" / "metrics.json").exists():
            print(f"  skipped {pdir}: not finished (no eval/metrics.json)")
            continue
        r = measure_point(pc, pdir, data, train_ex, test_ex, explain)
        r.update(mode=label, seed=seed, workdir=str(pdir))
        results.append(r)
    if not results:
        raise FileNotFoundError(f"{workdir}: no finished points")

    test_ids = results[0]["test_ids"]
    test_labels = np.array([int(e["label"]) for e in test_ex])
    test_groups = group_of(test_ids)
    train_ids = [int(e["id"]) for e in train_ex]
    train_labels = np.array([int(e["label"]) for e in train_ex])
    train_groups = group_of(train_ids)
    by_mode = {m: sorted((r for r in results if r["mode"] == m), key=lambda r: r["seed"]) for m in modes}

    # Per-mode table: mean ± sd over seeds of per-run means.
    cols = [("auc", "test AUC"), ("balanced_accuracy", "test bal. acc."),
            ("pointing_game_cervix", "pointing game (cervix)"), ("iou_cervix", "IoU (cervix)"),
            ("roi_area", "map area ≥ cut"),
            ("mass_cervix", "weight mass on cervix"), ("reg_err", "regulator centre err."),
            ("weight_err", "weight-map centre err."), ("epochs_to_val_auc_0.9", "epochs to val AUC ≥ 0.9")]
    def run_mean(r, k):
        return float(np.nanmean(r[k])) if isinstance(r[k], list) else r[k]

    init_err = float(np.mean(results[0]["init_err"]))
    md = [f"Regulator centre error at init (grid centre), all {len(train_ids)} training images: "
          f"{init_err:.3f} patches.", "",
          "| mode | n | " + " | ".join(c for _, c in cols) + " | refit accepted (last epoch) |",
          "|---" * (len(cols) + 3) + "|"]
    table = {}
    for m in modes:
        rs = by_mode[m]
        if not rs:
            continue
        table[m] = {k: [run_mean(r, k) for r in rs] for k, _ in cols}
        refit = [r["refit_valid_last_epoch"] for r in rs if r["refit_valid_last_epoch"] is not None]
        md.append(f"| {m} | {len(rs)} | " + " | ".join(mean_sd(table[m][k]) for k, _ in cols)
                  + f" | {mean_sd(refit) if refit else '-'} |")

    # Paired differences.
    md += ["", "| difference | metric | per seed | mean of per-seed | "
           "per-image bootstrap by group (seeds averaged per image), 95% |",
           "|---|---|---|---|---|"]
    paired = {}
    for a, b in pairs:
        ra, rb = by_mode.get(a, []), by_mode.get(b, [])
        seeds = sorted({r["seed"] for r in ra} & {r["seed"] for r in rb})
        if not seeds:
            continue
        sa = {r["seed"]: r for r in ra}
        sb = {r["seed"]: r for r in rb}
        for k, name in cols:
            per_seed = [run_mean(sa[s], k) - run_mean(sb[s], k) for s in seeds]
            if k == "reg_err" and not np.any(per_seed):
                continue                      # neither arm moves its regulator
            cell = "-"
            if k in MAP_METRICS + TRAIN_METRICS:
                labels, groups = ((test_labels, test_groups) if k in MAP_METRICS
                                  else (train_labels, train_groups))
                xa = np.nanmean([sa[s][k] for s in seeds], axis=0)
                xb = np.nanmean([sb[s][k] for s in seeds], axis=0)
                ok = np.isfinite(xa) & np.isfinite(xb)
                ci = paired_bootstrap_diff(lambda v, _labels: float(np.mean(v)), xa[ok], xb[ok], labels[ok],
                                           groups[ok], n_boot=n_boot, seed=0)
                cell = f"{ci['estimate']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}]"
                paired[f"{a}-{b}:{k}"] = {"per_seed": per_seed, "bootstrap": ci}
            else:
                paired[f"{a}-{b}:{k}"] = {"per_seed": per_seed}
            md.append(f"| {a} − {b} | {name} | {', '.join(f'{d:+.3f}' for d in per_seed)} | "
                      f"{np.mean(per_seed):+.3f} | {cell} |")

    # The tracked images' regulator over epochs (refit arms).
    refit_runs = [r for m in modes if m not in ("none", "fixed") for r in by_mode[m] if "tracked_curve" in r]
    if refit_runs:
        last = min(max(r["tracked_curve"]) for r in refit_runs)
        every = max(1, last // 10)
        epochs = [e for e in range(last + 1) if (e % every == 0 or e == last)
                  and all(e in r["tracked_curve"] for r in refit_runs)]
        md += ["", "Regulator centre error (patches) of the 4 tracked training images "
               "(regulator_history.npz), "
               "mean over the images:", "", "| arm | seed | " + " | ".join(f"ep {e}" for e in epochs) + " |",
               "|---" * (len(epochs) + 2) + "|"]
        for r in refit_runs:
            md.append(f"| {r['mode']} | {r['seed']} | "
                      + " | ".join(f"{r['tracked_curve'][e]:.2f}" for e in epochs) + " |")
    md += ["", "Checkpoints: maps at the best step by " + config.train.best_metric + " ("
           + ", ".join(f"{r['mode']}/{r['seed']}: {r['best_step']}" for r in results)
           + "); centres at the last step (" + str(results[0]["last_step"]) + ")."]
    text = "\n".join(md) + "\n"
    (workdir / "regulator_evidence.md").write_text(text)
    (workdir / "regulator_evidence.json").write_text(json.dumps(
        {"table": table, "paired": paired, "init_err": init_err, "runs": results}, indent=1, default=float))
    return {"markdown": str(workdir / "regulator_evidence.md"),
            "json": str(workdir / "regulator_evidence.json"), "table": table}

