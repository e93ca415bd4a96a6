"""Does the spatial regulator move paper A's patch weights onto the cervix? (EXPERIMENTS.md, A Fig. 5c)

Trains the patch model three ways on the same synthetic data, seeds and batches (paired):
lambda = 0 ("none"), a fixed centred regulator ("fixed") and the iteratively refit one ("iterative").
The synthetic cervix sits at a random, usually off-centre position, with speculum-bar distractors.
Reports on held-out images the pointing game and IoU of the patch-weight map against the cervix
mask, and over training the regulator's centre error vs the true cervix centre (patch units) on the
training images. Writes the regulator's evolution for 4 training images as a PNG.

    .venv/bin/python scripts/regulator_evidence.py --out runs/regulator_evidence   # ~10 min, 2 CPUs
    .venv/bin/python scripts/regulator_evidence.py --lam 1.0 --seeds 0 1           # a stronger prior

The loop mirrors the engine's train step (gather the batch's regulator rows by id, loss, scatter the
returned rows back) on in-memory data, so that it can snapshot every regulator each epoch.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # configs/ lives at the repo root

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from cervix_jax import regulator
from cervix_jax.data.synthetic import SyntheticConfig, generate_example
from cervix_jax.explain.evaluate import iou, pointing_game
from cervix_jax.metrics import binary_metrics
from cervix_jax.train import task_patch
from cervix_jax.viz.regulator import plot_regulator_evolution
from configs.patch import get_config

MODES = ("none", "fixed", "iterative")


def load(num_images, height, width, seed):
    cfg = SyntheticConfig(height=height, width=width, num_images=num_images, num_positive=num_images // 2,
                          images_per_woman=2, label="dysplasia", seed=seed, distractors=True)
    ex = [generate_example(cfg, i) for i in tqdm(range(num_images), desc="synthetic", leave=False)]
    stack = lambda k: np.stack([e[k] for e in ex])
    return {"image": stack("image").astype(np.float32) / 255.0, "label": stack("label").astype(np.int32),
            "id": stack("id").astype(np.int32), "group": stack("group"), "cervix_mask": stack("cervix_mask"),
            "cervix_center": stack("cervix_center")}


def map_metrics(a, masks, patch):
    """a [n, gh, gw] -> pointing game, IoU at 0.5 of the min-max map, IoU at 0.2 of the max map."""
    up = np.repeat(np.repeat(np.asarray(a), patch, 1), patch, 2)
    pg, iou_mm, iou_max = [], [], []
    for h, m in zip(up, masks):
        pg.append(float(pointing_game(jnp.asarray(h), jnp.asarray(m))))
        mm = (h - h.min()) / (h.max() - h.min() + 1e-12)
        iou_mm.append(float(iou(jnp.asarray(mm), jnp.asarray(m), 0.5)))
        iou_max.append(float(iou(jnp.asarray(h / h.max()), jnp.asarray(m), 0.2)))
    return float(np.mean(pg)), float(np.nanmean(iou_mm)), float(np.nanmean(iou_max))


def run(mode, data, train_idx, test_idx, args, seed):
    c = get_config(f"runlocal,{mode}")
    c.data.pad_to = tuple(data["image"].shape[1:3])
    c.model.patch_size = args.patch
    c.model.reg_lambda = args.lam
    task = task_patch.make(c)
    p = args.patch
    centres = data["cervix_center"] / p - 0.5                     # pixels -> patch-grid units
    variables = task.init(jax.random.PRNGKey(seed), data["image"].shape[1:])
    params = variables["params"]
    opt = optax.adam(args.lr)
    opt_state = opt.init(params)
    n = len(data["id"])
    state = task.init_example_state(n)

    @jax.jit
    def step(params, opt_state, state, batch):
        rows = None if state is None else jax.tree.map(lambda x: x[batch["id"]], state)
        (loss, aux), grads = jax.value_and_grad(task.loss, has_aux=True)(params, {}, batch, rows, None)
        updates, opt_state = opt.update(grads, opt_state, params)
        if state is not None:
            state = jax.tree.map(lambda x, r: x.at[batch["id"]].set(r), state, aux["example_state"])
        return optax.apply_updates(params, updates), opt_state, state, loss

    forward = jax.jit(task.forward)

    def weights_of(idx):
        return np.concatenate([np.asarray(forward(params, data["image"][idx[i:i + 32]])[1])
                               for i in range(0, len(idx), 32)])

    rng = np.random.default_rng(seed)
    shown = train_idx[:4]
    history, curve = [], []
    init_mu, init_cov = regulator.init_regulator(task.grid)
    for epoch in tqdm(range(args.epochs + 1), desc=f"{mode} seed {seed}", leave=False):
        if epoch > 0:
            order = rng.permutation(train_idx)
            for i in range(0, len(order) - args.batch + 1, args.batch):
                b = order[i:i + args.batch]
                batch = {"image": data["image"][b], "label": data["label"][b], "id": data["id"][b],
                         "weight": np.ones(len(b), np.float32)}
                params, opt_state, state, _ = step(params, opt_state, state, batch)
        mu = np.broadcast_to(init_mu, (n, 2)) if state is None else np.asarray(state["mu"])
        cov = np.broadcast_to(init_cov, (n, 2, 2)) if state is None else np.asarray(state["cov"])
        fit_mu = np.stack([np.asarray(regulator.fit_gaussian(w)[0]) for w in weights_of(train_idx)])
        curve.append({"epoch": epoch,
                      "regulator_centre_error": float(np.linalg.norm(mu[train_idx] - centres[train_idx], axis=1).mean()),
                      "weight_centre_error": float(np.linalg.norm(fit_mu - centres[train_idx], axis=1).mean())})
        if epoch in np.unique(np.linspace(0, args.epochs, 5).round().astype(int)):
            history.append((epoch, mu[shown].copy(), cov[shown].copy()))
    a = weights_of(test_idx)
    pg, iou_mm, iou_max = map_metrics(a, data["cervix_mask"][test_idx], p)
    scores = np.concatenate([np.asarray(task.predict(params, {}, {"image": data["image"][test_idx[i:i + 32]]}))
                             for i in range(0, len(test_idx), 32)])
    cls = binary_metrics(scores, data["label"][test_idx])
    if mode == "iterative" and args.out:
        plot_regulator_evolution((data["image"][shown] * 255).astype(np.uint8), history, p,
                                 Path(args.out) / f"regulator_evolution_seed{seed}.png",
                                 true_centers=data["cervix_center"][shown], masks=data["cervix_mask"][shown])
    return {"mode": mode, "seed": seed, "pointing_game": pg, "iou_minmax@0.5": iou_mm, "iou_max@0.2": iou_max,
            "auc": float(cls["auc"]), "balanced_accuracy": float(cls["balanced_accuracy"]),
            "regulator_centre_error": [r["regulator_centre_error"] for r in curve],
            "weight_centre_error": [r["weight_centre_error"] for r in curve]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num-images", type=int, default=160)
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/regulator_evidence")
    args = ap.parse_args()
    data = load(args.num_images, args.height, args.width, seed=0)
    groups = np.unique(data["group"])
    test_groups = np.random.default_rng(0).permutation(groups)[: len(groups) // 4]
    is_test = np.isin(data["group"], test_groups)
    train_idx, test_idx = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    rows = [run(m, data, train_idx, test_idx, args, s) for s in args.seeds for m in MODES]

    keys = ("pointing_game", "iou_minmax@0.5", "iou_max@0.2", "auc", "balanced_accuracy")
    print(f"\n{len(train_idx)} train / {len(test_idx)} test images {args.height}x{args.width}, "
          f"{args.patch}-px patches, lambda {args.lam}, {args.epochs} epochs, seeds {args.seeds}")
    print("| mode | " + " | ".join(keys) + " | reg. centre err. first -> last | weight centre err. first -> last |")
    print("|---" * (len(keys) + 3) + "|")
    for m in MODES:
        r = [x for x in rows if x["mode"] == m]
        cells = [f"{np.mean([x[k] for x in r]):.3f} ± {np.std([x[k] for x in r]):.3f}" for k in keys]
        rc = np.mean([x["regulator_centre_error"] for x in r], 0)
        wc = np.mean([x["weight_centre_error"] for x in r], 0)
        print(f"| {m} | " + " | ".join(cells) + f" | {rc[0]:.2f} -> {rc[-1]:.2f} | {wc[0]:.2f} -> {wc[-1]:.2f} |")
    for k in ("pointing_game", "iou_minmax@0.5"):
        d = [x[k] - y[k] for x in rows if x["mode"] == "iterative" for y in rows
             if y["mode"] == "none" and y["seed"] == x["seed"]]
        print(f"paired iterative - none, {k}: {np.mean(d):+.3f} (per seed {np.round(d, 3).tolist()})")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
