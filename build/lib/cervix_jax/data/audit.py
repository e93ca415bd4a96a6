"""Shortcut audit of a synthetic config: can simple models on nuisance statistics predict the label?

    python -m cervix_jax.data.audit --dataset synthetic_cervix/paper_b [--label treatability|dysplasia]
        [--num_women N] [--workers K] [--models logistic,trees]

For every image it computes nuisance statistics, in families: global colour moments (what a
GAP head reaches without looking anywhere), bar and wall counts, lesion area and count, cervix
position and size; and a positive control: the true Table 3 rule flags realised in the image
(treatability) or the CIN grade (dysplasia). Each family, and all nuisance families together, is
fitted with logistic regression and with shallow boosted trees under grouped, stratified 5-fold
cross-validation (a woman's images never straddle folds), and the mean test-fold AUC printed.
A clean dataset has every nuisance family near 0.5 (the bound used here: <= 0.65 for every model)
and the positive control near 1 (>= 0.95 for the better model).
Needs scikit-learn (`pip install 'cervix-jax[audit]'`).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from cervix_jax.data import synthetic

NUISANCE_BOUND = 0.65
CONTROL_BOUND = 0.95
FAMILIES = {
    "colour moments": (
        "mean_r",
        "mean_g",
        "mean_b",
        "std_r",
        "std_g",
        "std_b",
        "skew_grey",
        "frac_white",
        "frac_bright",
        "frac_steel",
    ),
    "bars and walls": ("num_bars", "num_walls"),
    "lesion area": ("lesion_area", "num_lesions", "mean_lesion_area"),
    "cervix position and size": ("box_cx", "box_cy", "box_w", "box_h", "cervix_area"),
}
MODELS = ("logistic", "trees")


def _sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError as e:  # a library module run by users: say what to install
        raise ImportError(
            "cervix_jax.data.audit needs scikit-learn, which is an optional dependency: "
            "pip install 'cervix-jax[audit]' (or pip install 'scikit-learn>=1.4')"
        ) from e
    from sklearn import ensemble, linear_model, metrics, model_selection, pipeline, preprocessing

    return ensemble, linear_model, metrics, model_selection, pipeline, preprocessing


def image_statistics(example: dict, info: dict) -> dict:
    """The nuisance statistics of one generated image (every name of FAMILIES), floats."""
    img = np.asarray(example["image"])[::2, ::2].astype(np.float32)
    H, W = example["image"].shape[:2]
    grey = img.mean(-1)
    lo = img.min(-1)
    g_mean, g_std = float(grey.mean()), float(grey.std()) + 1e-6
    lesion = np.asarray(example["lesion_mask"])
    n_les = int(info["num_lesions"])
    box = np.asarray(example["cervix_box"], np.float64)
    stats = {
        "mean_r": float(img[..., 0].mean()),
        "mean_g": float(img[..., 1].mean()),
        "mean_b": float(img[..., 2].mean()),
        "std_r": float(img[..., 0].std()),
        "std_g": float(img[..., 1].std()),
        "std_b": float(img[..., 2].std()),
        "skew_grey": float((((grey - g_mean) / g_std) ** 3).mean()),
        "frac_white": float((lo > 180).mean()),
        "frac_bright": float((grey > 200).mean()),
        "frac_steel": float(((img[..., 2] >= img[..., 0]) & (lo > 120)).mean()),
        "num_bars": float(info["num_bars"]),
        "num_walls": float(info["num_walls"]),
        "lesion_area": float(lesion.mean()),
        "num_lesions": float(n_les),
        "mean_lesion_area": float(lesion.sum() / max(1, n_les) / (H * W)),
        "box_cx": float((box[0] + box[2]) / 2 / W),
        "box_cy": float((box[1] + box[3]) / 2 / H),
        "box_w": float((box[2] - box[0]) / W),
        "box_h": float((box[3] - box[1]) / H),
        "cervix_area": float(np.asarray(example["cervix_mask"]).mean()),
    }
    return {k: (0.0 if not np.isfinite(v) else v) for k, v in stats.items()}


def control_flags(example: dict, info: dict, label: str) -> np.ndarray:
    """The positive control: the realised Table 3 rule flags (treatability) or the one-hot CIN grade."""
    if label == "treatability":
        return np.array([float(info["flags"][r]) for r in synthetic.REASONS])
    return np.eye(5)[int(example["cin_grade"])]


def _row(config: synthetic.SyntheticConfig, index: int):
    ex, info = synthetic.generate_example_info(config, index)
    return (
        image_statistics(ex, info),
        {k: int(ex[k]) for k in ("treatability", "dysplasia", "group", "reason")},
        {lab: control_flags(ex, info, lab) for lab in synthetic.LABEL_SETS},
    )


def collect(config: synthetic.SyntheticConfig, indices: Sequence[int], workers: int = 1) -> dict:
    """Statistics, labels, groups and control flags of the images `indices` of `config`."""
    from cervix_jax.data.builders import parallel_map

    rows = list(
        tqdm(
            parallel_map(
                functools.partial(_row, config), list(indices), workers, chunksize=config.images_per_woman
            ),
            total=len(indices),
            desc="audit: generating",
            leave=False,
        )
    )
    names = [n for fam in FAMILIES.values() for n in fam]
    return {
        "X": np.array([[r[0][n] for n in names] for r in rows], np.float64),
        "names": names,
        **{
            k: np.array([r[1][k] for r in rows], np.int64)
            for k in ("treatability", "dysplasia", "group", "reason")
        },
        "control": {lab: np.stack([r[2][lab] for r in rows]) for lab in synthetic.LABEL_SETS},
    }


def cv_auc(X: np.ndarray, y: np.ndarray, groups: np.ndarray, model: str, seed: int = 0, folds: int = 5):
    """(mean, sd) test-fold AUC of `model` under stratified grouped `folds`-fold CV."""
    ensemble, linear_model, metrics, model_selection, pipeline, preprocessing = _sklearn()
    if model == "logistic":
        make = lambda: pipeline.make_pipeline(
            preprocessing.StandardScaler(), linear_model.LogisticRegression(max_iter=2000)
        )
    elif model == "trees":
        make = lambda: ensemble.HistGradientBoostingClassifier(
            max_depth=3, max_iter=50, learning_rate=0.1, random_state=seed
        )
    else:
        raise ValueError(f"audit: model must be one of {MODELS}, found {model!r}")
    cv = model_selection.StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    aucs = []
    with threadpool_limits(1):  # small fits: threads only oversubscribe the cores
        for train, test in cv.split(X, y, groups):
            if len(np.unique(y[test])) < 2 or len(np.unique(y[train])) < 2:
                continue
            clf = make().fit(X[train], y[train])
            aucs.append(metrics.roc_auc_score(y[test], clf.predict_proba(X[test])[:, 1]))
    if not aucs:
        raise ValueError("audit: no fold has both classes; use more images")
    return float(np.mean(aucs)), float(np.std(aucs))


def audit(data: dict, label: str, models: Sequence[str] = MODELS, seed: int = 0) -> dict:
    """{row name: {model: (mean AUC, sd)}} for every family, "all nuisance families" and the control."""
    y, groups = data[label], data["group"]
    idx = {n: i for i, n in enumerate(data["names"])}
    sets = {fam: data["X"][:, [idx[n] for n in names]] for fam, names in FAMILIES.items()}
    sets["all nuisance families"] = data["X"]
    sets["positive control"] = data["control"][label]
    return {name: {m: cv_auc(X, y, groups, m, seed) for m in models} for name, X in sets.items()}


def check(result: dict) -> list[str]:
    """The rows that break a bound: a nuisance row with any model above NUISANCE_BOUND; the positive
    control with its best model below CONTROL_BOUND."""
    bad = []
    for name, by_model in result.items():
        if name == "positive control":
            best = max(auc for auc, _ in by_model.values())
            if best < CONTROL_BOUND:
                bad.append(f"{name}: best AUC {best:.3f} < {CONTROL_BOUND}")
            continue
        for m, (auc, _) in by_model.items():
            if auc > NUISANCE_BOUND:
                bad.append(f"{name} ({m}): AUC {auc:.3f} > {NUISANCE_BOUND}")
    return bad


def table(result: dict, models: Sequence[str]) -> str:
    head = "| statistics | " + " | ".join(f"{m} AUC" for m in models) + " |"
    lines = [head, "|---|" + "---|" * len(models)]
    for name, by_model in result.items():
        cells = " | ".join(f"{by_model[m][0]:.3f} ± {by_model[m][1]:.3f}" for m in models)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def config_for(dataset: str) -> synthetic.SyntheticConfig:
    """The generator config of `synthetic_cervix/<config>`."""
    from cervix_jax.data import builders

    name, _, cfg = dataset.partition("/")
    if name != "synthetic_cervix":
        raise ValueError(
            f"audit --dataset: only synthetic_cervix/<config> can be audited (the audit needs the "
            f"generator's bar/wall counts and rule flags), found {dataset!r}"
        )
    configs = builders.SyntheticCervix.builder_configs
    if (cfg or "tiny") not in configs:
        raise ValueError(f"audit --dataset: unknown config {cfg!r}; expected one of {sorted(configs)}")
    return configs[cfg or "tiny"].synthetic


def pick_women(config: synthetic.SyntheticConfig, num_women: Optional[int], seed: int = 0) -> list[int]:
    """Image indices of `num_women` women drawn at random (all of a woman's images), or of everyone."""
    group_of = synthetic.layout(config)[0]
    women = np.arange(config.num_women)
    if num_women is not None and num_women < women.size:
        women = np.sort(np.random.default_rng(seed).choice(women, num_women, replace=False))
    return [int(i) for i in np.flatnonzero(np.isin(group_of, women))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cervix_jax.data.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", default="synthetic_cervix/tiny", help="synthetic_cervix/<config>")
    p.add_argument(
        "--label",
        default=None,
        help="treatability|dysplasia, or both comma-separated (one generation); default: the config's",
    )
    p.add_argument(
        "--num_women", type=int, default=None, help="audit a random subset of women (all their images)"
    )
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: logistic,trees")
    p.add_argument("--seed", type=int, default=0, help="subset and fold seed")
    a = p.parse_args(argv)
    _sklearn()
    config = config_for(a.dataset)
    labels = [lab for lab in (a.label or config.label).split(",") if lab]
    for lab in labels:
        if lab not in synthetic.LABEL_SETS:
            p.error(f"--label: expected treatability and/or dysplasia, found {lab!r}")
    models = [m for m in a.models.split(",") if m]
    indices = pick_women(config, a.num_women, a.seed)
    data = collect(config, indices, a.workers)
    failed = False
    for label in labels:
        result = audit(data, label, models, a.seed)
        y = data[label]
        print(
            f"\n{a.dataset}: {len(indices)} images of {len(np.unique(data['group']))} women, label {label} "
            f"({int(y.sum())} positive); grouped stratified 5-fold CV, mean ± sd of the test-fold AUC"
        )
        print(table(result, models))
        bad = check(result)
        failed |= bool(bad)
        print(
            "bounds (nuisance <= %.2f, positive control >= %.2f): %s"
            % (NUISANCE_BOUND, CONTROL_BOUND, "met" if not bad else "NOT met: " + "; ".join(bad))
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
