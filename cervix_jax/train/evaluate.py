"""`evaluate(config, workdir)`: scores val and test once each with the best checkpoint, picks the
threshold on val, writes `WORKDIR/eval/metrics.json`, per-split `scores_<split>.csv`, `roc.png`,
`scores.png`, `curves.png`. `explain_split(config, workdir)` runs the explainers on a split.

Both read the run and write only their own folder (`out_dir`, default `WORKDIR/eval` and
`WORKDIR/explain/<split>`). On a sweep point (`SWEEP/points/<name>/`) they refuse to write into the
point (the sweep's own results live there) and need `out_dir`; a fast-path point (no Orbax
checkpoint, the kept head in `head.npz`) is restored from that file."""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np

from cervix_jax.train import checkpoint as ckpt_lib
from cervix_jax.train.errors import RunRefused
from cervix_jax.jsonsafe import dumps
from cervix_jax.train.loop import local_data, score_split
from cervix_jax.train.parallel import data_parallel
from cervix_jax.train.state import create_state, make_optimizer
from cervix_jax.train.steps import eval_step
from cervix_jax.train.task import make_task


class SweepPointError(RunRefused, ValueError):
    """`eval`/`explain` asked to write into a sweep point."""


def sweep_root(workdir) -> Path | None:
    """The sweep folder when `workdir` is one of its points (SWEEP/points/<name>), else None."""
    workdir = Path(workdir).absolute()
    if workdir.parent.name == "points" and (workdir.parent.parent / "config.json").exists():
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


def _fast_path_head(task, workdir, frozen):
    """(variables, step) of a sweep fast-path point's `head.npz`, checked against the task's head."""
    path = Path(workdir) / "head.npz"
    with np.load(path) as f:
        kernel, bias, step = np.asarray(f["kernel"]), np.asarray(f["bias"]), int(f["step"])
    expected = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
    want = (expected["classifier"]["kernel"].shape, expected["classifier"]["bias"].shape)
    if (kernel.shape, bias.shape) != want:
        raise ValueError(f"{path}: head of kernel {kernel.shape} / bias {bias.shape}, but this config's "
                         f"head has {want[0]} / {want[1]}: use the point's config (its config.json)")
    return {"params": {"classifier": {"kernel": kernel, "bias": bias}}, "frozen": frozen}, step


def restore_trained(config, workdir, data):
    """(task, variables, step) of the best checkpoint (by config.train.best_metric), else the last;
    for a sweep fast-path point, its `head.npz`."""
    task = make_task(config)
    state, frozen = create_state(task, make_optimizer(config.train), seed=config.seed,
                                 image_shape=data.image_shape, num_examples=data.num_examples)
    ckpt_dir = Path(workdir) / "checkpoints"
    has_steps = ckpt_dir.is_dir() and any(c.name.isdigit() for c in ckpt_dir.iterdir())
    if not has_steps and (Path(workdir) / "head.npz").exists() and hasattr(task, "init_params"):
        variables, step = _fast_path_head(task, workdir, frozen)
        return task, variables, step
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint; run `launch.py train` first")
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


def evaluate(config, workdir, out_dir=None) -> dict:
    """Metrics at 0.5 and at the val-chosen threshold for val and test (see module doc)."""
    from cervix_jax import metrics as M
    from cervix_jax.viz import curves

    out_dir = output_dir(workdir, out_dir, "eval", "eval")
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
    if jax.process_index() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(dumps(result, indent=2))
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


def explain_split(config, workdir, out_dir=None) -> Path:
    """Explainers on the first `config.explain.max_images` of `config.explain.split`, into
    WORKDIR/explain/<split>/ or `out_dir` (through `cervix_jax.explain.run.explain_to_dir`)."""
    from cervix_jax.explain.run import explain_to_dir

    out = output_dir(workdir, out_dir, f"explain/{config.explain.split}", "explain")
    data = local_data(config)
    task, variables, _ = restore_trained(config, workdir, data)
    model = task.explainable(variables)
    examples = data.examples(config.explain.split, config.explain.max_images)
    if jax.process_index() == 0:
        explain_to_dir(model, examples, out, methods=tuple(config.explain.methods),
                       threshold=config.explain.threshold, class_names=model.class_names)
    return out


def _jsonable(d: dict) -> dict:
    return {k: (np.asarray(v).tolist() if np.ndim(v) else float(v)) for k, v in d.items()}
