"""The run directory (a workdir): the one module that writes and reads its files.

    config.json              the run's config (saved once: identity.py)   write_config / read_config
    config_changes.jsonl     accepted or forced config changes             append_config_change
    metrics.jsonl            a JSON row per log step, epoch   MetricsLog / read_metrics
    events.out.tfevents.*    the same rows for TensorBoard    MetricsLog
    train_summary.json       how training ended               write_train_summary / read_train_summary
    head.npz                 the cached-feature trainer's head   write_head / read_head
    regulator_history.npz    paper A's tracked regulators     write_ / read_regulator_history
    eval/metrics.json        metrics at 0.5 and at the val-chosen threshold   write_eval / read_eval
    eval/scores_<split>.csv  id,label,score per example       write_eval / read_scores
    eval/patch_weights.json  paper A's weights on the cervix, regulator movement   write_ / read_patch_weights

Every JSON file is strict JSON (`strict_dumps`): a non-finite number is written as `null`, never as
a `NaN`/`Infinity` token that JSON readers reject. `checkpoints/` belongs to `train/checkpoint.py`,
`.lock` to `train/lock.py`, `explain/<split>/` to `explain/run.py` (read by
`review/`), the figures to `viz/`. Scores are written with `repr(float)`, so they read back to exactly
the values the metrics were computed from. `eval/metrics.json` is written last and atomically: it
marks a finished evaluation (a sweep point that has it is done). TensorBoard event files come from
tensorboardX (no TensorFlow): `tensorboard --logdir runs/` shows every run below `runs/`.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

CONFIG = "config.json"
CONFIG_CHANGES = "config_changes.jsonl"
METRICS = "metrics.jsonl"
TRAIN_SUMMARY = "train_summary.json"
HEAD = "head.npz"
REGULATOR_HISTORY = "regulator_history.npz"
EVAL_DIR = "eval"
EVAL = "eval/metrics.json"
PATCH_WEIGHTS = "eval/patch_weights.json"
SPLITS = ("val", "test")


def scores_path(workdir, split: str) -> Path:
    return Path(workdir) / EVAL_DIR / f"scores_{split}.csv"


def jsonable(d: dict) -> dict:
    """Metric values (NumPy scalars or arrays) -> JSON numbers and lists."""
    return {k: (np.asarray(v).tolist() if np.ndim(v) else float(v)) for k, v in d.items()}


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (dicts, lists, tuples, NumPy values)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def strict_dumps(obj: Any, **kwargs) -> str:
    """json.dumps of `finite(obj)` with allow_nan=False: no NaN tokens in any file of a workdir."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


# -- config ------------------------------------------------------------------------------------
def write_config(workdir, config) -> None:
    """Writes config.json from a ConfigDict or from its JSON object (a dict)."""
    obj = config if isinstance(config, dict) else json.loads(config.to_json_best_effort(sort_keys=True))
    _write_atomic(Path(workdir) / CONFIG, strict_dumps(obj, indent=2, sort_keys=True))


def append_config_change(workdir, record: dict) -> None:
    with (Path(workdir) / CONFIG_CHANGES).open("a") as f:
        f.write(strict_dumps(record) + "\n")


def read_config(workdir) -> dict:
    return json.loads((Path(workdir) / CONFIG).read_text())


# -- training ----------------------------------------------------------------------------------
class MetricsLog:
    """Appends rows {"step", "epoch", "split", metric: value, ...} to metrics.jsonl and, as scalars
    `<split>/<metric>`, to TensorBoard event files in the workdir.

    `resume_step`: the step the run starts from (0 for a new run); rows a killed run wrote after it
    are dropped (from metrics.jsonl, and by TensorBoard's purge_step)."""

    def __init__(self, workdir, *, resume_step: int = 0, tensorboard: bool = True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / METRICS
        if self.path.exists():
            keep = [r for r in self.path.read_text().splitlines()
                    if r.strip() and _row_step(r) <= resume_step]
            self.path.write_text("".join(r + "\n" for r in keep))
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(logdir=str(self.workdir), purge_step=resume_step or None,
                                     flush_secs=30)

    def append(self, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(strict_dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch", "split") and np.ndim(v) == 0:
                    self._tb.add_scalar(f"{row.get('split', 'train')}/{k}", float(v), int(row["step"]))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _row_step(row: str) -> int:
    try:
        return int(json.loads(row).get("step", 0))
    except (ValueError, AttributeError):
        return 0


def read_metrics(workdir) -> list[dict]:
    """The rows of metrics.jsonl ([] when there is none)."""
    path = Path(workdir) / METRICS
    if not path.exists():
        return []
    return [json.loads(r) for r in path.read_text().splitlines() if r.strip()]


def write_train_summary(workdir, summary: dict) -> None:
    _write_atomic(Path(workdir) / TRAIN_SUMMARY, strict_dumps(summary, indent=2))


def read_train_summary(workdir) -> dict:
    return json.loads((Path(workdir) / TRAIN_SUMMARY).read_text())


def write_head(workdir, *, kernel, bias, step: int, levels) -> None:
    np.savez(Path(workdir) / HEAD, kernel=np.asarray(kernel), bias=np.asarray(bias), step=step,
             levels=np.array(levels))


def read_head(workdir) -> dict:
    """{"kernel" [K, C], "bias" [C], "step" int, "levels" tuple of level names}."""
    with np.load(Path(workdir) / HEAD) as f:
        return {"kernel": f["kernel"], "bias": f["bias"], "step": int(f["step"]),
                "levels": tuple(str(x) for x in f["levels"])}


def write_regulator_history(workdir, history: dict) -> None:
    """{"mu_<epoch>": [n, 2], "cov_<epoch>": [n, 2, 2]} of paper A's tracked training images."""
    np.savez(Path(workdir) / REGULATOR_HISTORY, **history)


def read_regulator_history(workdir) -> dict:
    """The history written by `write_regulator_history` ({} when there is none)."""
    path = Path(workdir) / REGULATOR_HISTORY
    if not path.exists():
        return {}
    with np.load(path) as f:
        return dict(f)


# -- evaluation --------------------------------------------------------------------------------
def write_eval(workdir, result: dict, scored: dict, out_dir=None) -> None:
    """eval/scores_<split>.csv of every split in `scored` ({split: {"id", "label", "score"}}), then
    eval/metrics.json (`result`, see `scoring.eval_result`) last, atomically. `out_dir` replaces
    WORKDIR/eval (`launch.py eval --out`)."""
    folder = Path(out_dir) if out_dir is not None else Path(workdir) / EVAL_DIR
    for split, sc in scored.items():
        rows = "".join(f"{int(i)},{int(lab)},{float(v)!r}\n"
                       for i, lab, v in zip(sc["id"], sc["label"], sc["score"]))
        _write_atomic(folder / f"scores_{split}.csv", "id,label,score\n" + rows)
    _write_atomic(folder / "metrics.json", strict_dumps(result, indent=2))


def eval_done(workdir) -> bool:
    return (Path(workdir) / EVAL).exists()


def write_patch_weights(workdir, summary: dict) -> None:
    """eval/patch_weights.json (`reports.patch_run.summarize`'s result), atomically."""
    _write_atomic(Path(workdir) / PATCH_WEIGHTS, strict_dumps(summary, indent=2))


def read_patch_weights(workdir):
    """eval/patch_weights.json as a dict, or None when the run has none (not a patch model, or older)."""
    path = Path(workdir) / PATCH_WEIGHTS
    return json.loads(path.read_text()) if path.exists() else None


def read_eval(workdir) -> dict:
    path = Path(workdir) / EVAL
    if not path.exists():
        raise FileNotFoundError(f"{path}: no evaluation; run `launch.py eval` (or the sweep) first")
    return json.loads(path.read_text())


def read_scores(workdir, split: str) -> dict:
    """eval/scores_<split>.csv -> {"id" int64, "label" int64, "score" float64}."""
    with scores_path(workdir, split).open() as f:
        rows = list(csv.DictReader(f))
    return {"id": np.array([int(r["id"]) for r in rows], np.int64),
            "label": np.array([int(r["label"]) for r in rows], np.int64),
            "score": np.array([float(r["score"]) for r in rows], np.float64)}
