"""`evaluate(config, workdir)`: scores val and test once each with the best checkpoint, picks the
threshold on val, writes `WORKDIR/eval/metrics.json` and per-split `scores_<split>.csv` (through
`rundir`) and the figures `roc.png`, `scores.png`, `curves.png`. `explain_split(config, workdir)`
runs the explainers on a split.

Both read the run and write only their own folder (`out_dir`, default `WORKDIR/eval` and
`WORKDIR/explain/<split>`). On a sweep point (`SWEEP/points/<name>/`) they refuse to write into the
point (the sweep's own results live there) and need `out_dir`; a point of the cached-feature trainer
(no Orbax checkpoint, the kept head in `head.npz`) is restored from that file (`checkpoint.restore`)."""
from __future__ import annotations

import functools
from pathlib import Path

import jax

from cervix_jax.train import rundir
from cervix_jax.train.checkpoint import restore
from cervix_jax.train.data import local_data
from cervix_jax.train.errors import RunRefused
from cervix_jax.train.parallel import data_parallel
from cervix_jax.train.scoring import eval_result, score_split
from cervix_jax.train.steps import eval_step


class SweepPointError(RunRefused, ValueError):
    """`eval`/`explain` asked to write into a sweep point."""


def sweep_root(workdir) -> Path | None:
    """The sweep folder when `workdir` is one of its points (SWEEP/points/<name>), else None."""
    workdir = Path(workdir).absolute()
    if workdir.parent.name == "points" and (workdir.parent.parent / rundir.CONFIG).exists():
        return workdir.parent.parent
    return None


def output_dir(workdir, out_dir, default: str, mode: str) -> Path:
    """Where `eval`/`explain` write: `out_dir`, else WORKDIR/<default>; never into a sweep point."""
    if out_dir is not None:
        return Path(out_dir)
    root = sweep_root(workdir)
    if root is not None:
        raise SweepPointError(
            f"{workdir} is a point of the sweep in {root}: `{mode}` would overwrite the sweep's own results "
            f"there. Pass --out DIR (a folder outside the sweep) to {mode} this point.")
    return Path(workdir) / default


def evaluate(config, workdir, out_dir=None) -> dict:
    """Metrics at 0.5 and at the val-chosen threshold for val and test (see module doc); into
    WORKDIR/eval or `out_dir`."""
    from cervix_jax import metrics as M
    from cervix_jax.viz import curves

    out_dir = output_dir(workdir, out_dir, rundir.EVAL_DIR, "eval")
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
        rundir.write_eval(workdir, result, scored, out_dir=out_dir)
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


def explain_split(config, workdir, out_dir=None) -> Path:
    """Explainers on the first `config.explain.max_images` of `config.explain.split`, into
    WORKDIR/explain/<split>/ or `out_dir` (through `cervix_jax.explain.run.explain_to_dir`)."""
    from cervix_jax.explain.run import explain_to_dir

    out = output_dir(workdir, out_dir, f"explain/{config.explain.split}", "explain")
    data = local_data(config)
    run = restore(config, workdir, data)
    model = run.task.explainable(run.variables)
    examples = data.examples(config.explain.split, config.explain.max_images)
    if jax.process_index() == 0:
        explain_to_dir(model, examples, out, methods=tuple(config.explain.methods),
                       threshold=config.explain.threshold, class_names=model.class_names)
    return out
