"""Do paper A's patch CNN features, untrained, already carry the CIN2+ texture, and where?

    python scripts/patch_feature_probe.py                    # synthetic_cervix/patch_demo, 3 inits, ~30 s
    python scripts/patch_feature_probe.py --inits 5 --split-seed 1

Generates the builder config's images (`--data`, default the patch demo's), cuts them into the model's
patches, runs a randomly initialised `PatchCNN` (frozen: never trained) on every patch, pools each
image's patch features three ways and fits a logistic regression (scikit-learn, standardised inputs) on
the training split; prints val/test AUC per pooling and init:
  - "mean, all patches": the model's aggregation with flat weights (every weight equal, as at init);
  - "max, all patches": the elementwise max over patches;
  - "mean, lesion patches (oracle)": the mean over the patches >= `--cut` covered by the lesion mask
    (all patches where an image has none), i.e. the weights a perfect weighting would learn. It uses the
    masks, so it is an upper bound, not an approach.
The split is the engine's (`group_split` by woman, `--split-seed`). docs/results/paper_a.md ("The demo's
patch model", seventh round) has what it measured.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pooled(features: np.ndarray, lesion_fraction: np.ndarray, cut: float) -> dict[str, np.ndarray]:
    """features [N, P, K], lesion_fraction [N, P] (the share of each patch's pixels in the lesion mask)
    -> {pooling: [N, K]}; the oracle falls back to the mean over all patches for an image without a
    patch at or above `cut`."""
    w = (lesion_fraction >= cut).astype(features.dtype)
    n = w.sum(1)
    oracle = (w[..., None] * features).sum(1) / np.maximum(n, 1)[:, None]
    mean = features.mean(1)
    return {"mean, all patches": mean, "max, all patches": features.max(1),
            "mean, lesion patches (oracle)": np.where(n[:, None] > 0, oracle, mean)}


def probe(data: str, inits: int, split_seed: int, cut: float, patch_size: int,
          normalization: str = "torch") -> list[dict]:
    import jax
    import jax.numpy as jnp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from cervix_jax.data import synthetic
    from cervix_jax.data.builders import SyntheticCervix
    from cervix_jax.data.pipeline import normalize
    from cervix_jax.models.patch import PatchCNN, patchify
    from cervix_jax.data.split import group_split
    from cervix_jax.train.config import base_config

    configs = {c.name: c.synthetic for c in SyntheticCervix.BUILDER_CONFIGS}
    if data not in configs:
        raise SystemExit(f"--data: expected one of {', '.join(configs)}; found {data!r}")
    cfg = configs[data]
    if cfg.label != "dysplasia":
        raise SystemExit(f"--data {data}: its label is {cfg.label!r}; this probe needs a 'dysplasia' config")
    examples = list(synthetic.generate(cfg))
    images = normalize(np.stack([e["image"] for e in examples]), normalization)
    y = np.array([int(e["dysplasia"]) for e in examples])
    groups = np.array([int(e["group"]) for e in examples])
    lesion = np.stack([e["lesion_mask"] for e in examples]).astype(np.float32)[..., None]
    grid = jax.vmap(lambda x: patchify(x, patch_size))(jnp.asarray(images))           # [N, gh, gw, p, p, 3]
    patches = grid.reshape(len(y), -1, *grid.shape[3:])                                 # [N, P, p, p, 3]
    frac = np.asarray(jax.vmap(lambda m: patchify(m, patch_size).mean((2, 3, 4)))(jnp.asarray(lesion)))
    frac = frac.reshape(len(y), -1)                                                     # [N, P]
    fractions = base_config("patch").data                  # the engine's split fractions
    split = group_split(y, groups, test_fraction=fractions.test_fraction, val_fraction=fractions.val_fraction,
                        seed=split_seed)
    rows = []
    for seed in range(inits):
        cnn = PatchCNN()
        params = cnn.init(jax.random.key(seed), patches[0, :2])
        apply = jax.jit(jax.vmap(lambda x: cnn.apply(params, x)))
        feats = np.concatenate([np.asarray(apply(patches[i:i + 64])) for i in range(0, len(y), 64)])
        for name, x in pooled(feats, frac, cut).items():
            scale = StandardScaler().fit(x[split["train"]])
            fit = LogisticRegression(C=1.0, max_iter=5000).fit(scale.transform(x[split["train"]]),
                                                               y[split["train"]])
            auc = {s: float(roc_auc_score(y[split[s]], fit.decision_function(scale.transform(x[split[s]]))))
                   for s in ("val", "test")}
            rows.append({"init": seed, "pooling": name, **auc})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="patch_demo", help="a synthetic_cervix builder config")
    ap.add_argument("--inits", type=int, default=3, help="random PatchCNN inits (keys 0..n-1)")
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--cut", type=float, default=0.5, help="lesion share that makes a patch a lesion patch")
    ap.add_argument("--patch-size", type=int, default=8)
    args = ap.parse_args(argv)
    rows = probe(args.data, args.inits, args.split_seed, args.cut, args.patch_size)
    print("| init | pooling | val AUC | test AUC |\n|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['init']} | {r['pooling']} | {r['val']:.3f} | {r['test']:.3f} |")


if __name__ == "__main__":
    main()
