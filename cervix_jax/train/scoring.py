"""Scoring a split and the metrics made of the scores (used by the loop, `evaluate` and every trainer).

`score_split` runs a model over every example of an evaluation loader once; `val_metrics` is what the
loop logs and picks checkpoints by; `eval_result` is the record `rundir.write_eval` stores: metrics at
0.5 and at the threshold chosen on validation, for val and test.
"""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from cervix_jax import metrics as M
from cervix_jax.train.rundir import jsonable


class NonFiniteScoreError(FloatingPointError):
    """Some examples got a NaN/inf score; the message names their ids (launch.py exits 3)."""


def score_split(p_eval: Callable, params, frozen, loader) -> dict[str, np.ndarray]:
    """Scores every example of `loader` exactly once: dict id, label, score sorted by id."""
    parts = [jax.device_get(p_eval(params, frozen, b)) for b in loader.epoch(0)]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("id", "label", "score", "weight")}
    keep = cat["weight"] > 0
    out = {k: cat[k][keep] for k in ("id", "label", "score")}
    order = np.argsort(out["id"], kind="stable")
    out = {k: v[order] for k, v in out.items()}
    if len(np.unique(out["id"])) != len(out["id"]):
        raise RuntimeError("evaluation scored some example twice: the loader's padding is not weight 0")
    bad = ~np.isfinite(out["score"])
    if bad.any():   # never let a NaN score reach a threshold, an argmax or a JSON file
        raise NonFiniteScoreError(f"{int(bad.sum())} of {len(bad)} examples got a non-finite score (NaN or "
                                  f"inf): ids {out['id'][bad][:20].tolist()}; check those inputs and the "
                                  f"checkpoint")
    return out


def val_metrics(scored: dict) -> dict[str, float]:
    """`val_<metric>` of `metrics.binary_metrics` at 0.5, scalars only."""
    m = M.binary_metrics(scored["score"], scored["label"], 0.5)
    return {f"val_{k}": float(v) for k, v in m.items() if np.ndim(v) == 0}


def eval_result(scored: dict, *, step: int, blur: int, **extra) -> dict:
    """{"checkpoint_step", "blur", **extra, "thresholds", "val", "test"} from scored val and test:
    the threshold is chosen on val (`metrics.choose_threshold`); each split gets n and the metrics
    at 0.5 and at that threshold."""
    threshold = float(M.choose_threshold(scored["val"]["score"], scored["val"]["label"]))
    result = {"checkpoint_step": int(step), "blur": blur, **extra,
              "thresholds": {"default": 0.5, "val_chosen": threshold}}
    for split in ("val", "test"):
        sc = scored[split]
        result[split] = {"n": int(len(sc["id"])),
                         "at_0.5": jsonable(M.binary_metrics(sc["score"], sc["label"], 0.5)),
                         "at_val_threshold": jsonable(M.binary_metrics(sc["score"], sc["label"], threshold))}
    return result
