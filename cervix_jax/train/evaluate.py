"""`evaluate(config, workdir)`: scores val and test once each with the best checkpoint, picks the
threshold on val, writes `WORKDIR/eval/metrics.json` and per-split `scores_<split>.csv` (through
`rundir`) and the figures `roc.png`, `scores.png`, `curves.png`. `explain_split(config, workdir)`
runs the explainers on a split."""
from __future__ import annotations

import functools
from pathlib import Path

import jax

from cervix_jax.train import rundir
from cervix_jax.train.checkpoint import restore
from cervix_jax.train.data import local_data
from cervix_jax.train.parallel import data_parallel
from cervix_jax.train.scoring import eval_result, score_split
from cervix_jax.train.steps import eval_step


def evaluate(config, workdir) -> dict:
    """Metrics at 0.5 and at the val-chosen threshold for val and test (see module doc)."""
    from cervix_jax import metrics as M
    from cervix_jax.viz import curves

    out_dir = Path(workdir) / rundir.EVAL_DIR
    data = local_data(config)
    run = restore(config, workdir, data)
    p_eval = data_parallel(functools.partial(eval_step, task=run.task),
                           config.parallel.wrapper, num_replicated=2)
    scored = {s: score_split(p_eval, run.state.params, run.frozen, data.eval[s]) for s in ("val", "test")}
    result = eval_result(scored, step=run.step, blur=config.data.blur)
    if jax.process_index() == 0 and hasattr(run.task, "evaluate_extra"):  # e.g. detection AP and overlays
        out_dir.mkdir(parents=True, exist_ok=True)
        result.update(run.task.evaluate_extra(run.variables, data, out_dir))
    if jax.process_index() == 0:
        rundir.write_eval(workdir, result, scored)
        roc = {}
        for s, sc in scored.items():
            fpr, tpr, _ = M.roc_curve(sc["score"], sc["label"])
            roc[s] = (fpr, tpr, result[s]["at_0.5"]["auc"])
        curves.roc_png(roc, out_dir / "roc.png")
        curves.scores_png(scored["test"]["score"], scored["test"]["label"], out_dir / "scores.png",
                          thresholds={"0.5": 0.5, "val-chosen": result["thresholds"]["val_chosen"]})
        rows = rundir.read_metrics(workdir)
        if rows:
            curves.training_curves_png(rows, out_dir / "curves.png")
    return result


def explain_split(config, workdir) -> Path:
    """Explainers on the first `config.explain.max_images` of `config.explain.split`, into
    WORKDIR/explain/<split>/ (through `cervix_jax.explain.run.explain_to_dir`)."""
    from cervix_jax.explain.run import explain_to_dir

    data = local_data(config)
    run = restore(config, workdir, data)
    model = run.task.explainable(run.variables)
    examples = data.examples(config.explain.split, config.explain.max_images)
    out = Path(workdir) / "explain" / config.explain.split
    if jax.process_index() == 0:
        explain_to_dir(model, examples, out, methods=tuple(config.explain.methods),
                       threshold=config.explain.threshold, class_names=model.class_names)
    return out
