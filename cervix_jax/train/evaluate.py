"""`evaluate(config, workdir)`: scores val and test once each with the best checkpoint, picks the
threshold on val, writes `WORKDIR/eval/metrics.json`, per-split `scores_<split>.csv`, `roc.png`,
`scores.png`, `curves.png`. `explain_split(config, workdir)` runs the explainers on a split."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import numpy as np

from cervix_jax.train import checkpoint as ckpt_lib
from cervix_jax.train.loop import local_data, score_split
from cervix_jax.train.parallel import data_parallel
from cervix_jax.train.state import create_state, make_optimizer
from cervix_jax.train.steps import eval_step
from cervix_jax.train.task import make_task


def restore_trained(config, workdir, data):
    """(task, variables, step) of the best checkpoint (by config.train.best_metric), else the last."""
    task = make_task(config)
    state, frozen = create_state(task, make_optimizer(config.train), seed=config.seed,
                                 image_shape=data.image_shape, num_examples=data.num_examples)
    ckpts = ckpt_lib.Checkpoints(Path(workdir) / "checkpoints", keep=config.train.keep,
                                 best_metric=config.train.best_metric)
    try:
        latest = ckpts.restore(state)
        if latest is None:
            raise FileNotFoundError(f"{ckpts.directory}: no checkpoint; run `launch.py train` first")
        state, meta = latest
        best = meta.get("best_step")
        if best is not None and best != int(state.step) and best in ckpts.steps():
            state, meta = ckpts.restore(state, step=best)
    finally:
        ckpts.close()
    return task, {"params": state.params, "frozen": frozen}, int(state.step)


def evaluate(config, workdir) -> dict:
    """Metrics at 0.5 and at the val-chosen threshold for val and test (see module doc)."""
    from cervix_jax import metrics as M
    from cervix_jax.viz import curves

    out_dir = Path(workdir) / "eval"
    data = local_data(config)
    task, variables, step = restore_trained(config, workdir, data)
    p_eval = data_parallel(functools.partial(eval_step, task=task),
                           config.parallel.wrapper, num_replicated=2)
    scored = {s: score_split(p_eval, variables["params"], variables["frozen"], data.eval[s])
              for s in ("val", "test")}
    threshold = float(M.choose_threshold(scored["val"]["score"], scored["val"]["label"]))
    result = {"checkpoint_step": step, "blur": config.data.blur,
              "thresholds": {"default": 0.5, "val_chosen": threshold}}
    for s, sc in scored.items():
        result[s] = {"n": int(len(sc["id"])),
                     "at_0.5": _jsonable(M.binary_metrics(sc["score"], sc["label"], 0.5)),
                     "at_val_threshold": _jsonable(M.binary_metrics(sc["score"], sc["label"], threshold))}
    if jax.process_index() == 0 and hasattr(task, "evaluate_extra"):   # e.g. detection AP and overlays
        out_dir.mkdir(parents=True, exist_ok=True)
        result.update(task.evaluate_extra(variables, data, out_dir))
    if jax.process_index() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        for s, sc in scored.items():
            rows = "".join(f"{i},{lab},{v:.8g}\n" for i, lab, v in zip(sc["id"], sc["label"], sc["score"]))
            (out_dir / f"scores_{s}.csv").write_text("id,label,score\n" + rows)
        roc = {}
        for s, sc in scored.items():
            fpr, tpr, _ = M.roc_curve(sc["score"], sc["label"])
            roc[s] = (fpr, tpr, result[s]["at_0.5"]["auc"])
        curves.roc_png(roc, out_dir / "roc.png")
        curves.scores_png(scored["test"]["score"], scored["test"]["label"], out_dir / "scores.png",
                          thresholds={"0.5": 0.5, "val-chosen": threshold})
        if (Path(workdir) / "metrics.jsonl").exists():
            curves.training_curves_png(Path(workdir) / "metrics.jsonl", out_dir / "curves.png")
    return result


def explain_split(config, workdir) -> Path:
    """Explainers on the first `config.explain.max_images` of `config.explain.split`, into
    WORKDIR/explain/<split>/ (through `cervix_jax.explain.run.explain_to_dir`)."""
    from cervix_jax.explain.run import explain_to_dir

    data = local_data(config)
    task, variables, _ = restore_trained(config, workdir, data)
    model = task.explainable(variables)
    examples = data.examples(config.explain.split, config.explain.max_images)
    out = Path(workdir) / "explain" / config.explain.split
    if jax.process_index() == 0:
        explain_to_dir(model, examples, out, methods=tuple(config.explain.methods),
                       threshold=config.explain.threshold, class_names=model.class_names)
    return out


def _jsonable(d: dict) -> dict:
    return {k: (np.asarray(v).tolist() if np.ndim(v) else float(v)) for k, v in d.items()}
