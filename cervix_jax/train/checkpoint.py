"""Orbax checkpoints of a `TrainState` plus a JSON `meta` (early-stopping bookkeeping, a SHA-256
of the state) under `WORKDIR/checkpoints/<step>/`.

Keeps the last `keep` steps and the best one by `best_metric` (Orbax preservation policies).
Saves are async; `close()` waits for them. On restore, the newest step that reads back and matches
its hash wins; an unreadable or mismatching one is reported and moved to
`WORKDIR/checkpoints.corrupt/<step>`, and the one before it is tried.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from cervix_jax.train.parallel import to_host
from cervix_jax.train.state import TrainState

log = logging.getLogger(__name__)


def lower_is_better(metric: str) -> bool:
    """Metrics named like a loss or an error rate are minimised; everything else maximised."""
    return metric.endswith("loss") or metric.endswith("eer")


def state_digest(state_host) -> str:
    """SHA-256 over every leaf's dtype, shape and bytes, in tree order."""
    import jax
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(state_host):
        a = np.ascontiguousarray(leaf)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Checkpoints:
    def __init__(self, directory: Path, *, keep: int, best_metric: str):
        self.directory = Path(directory).absolute()
        sign = -1.0 if lower_is_better(best_metric) else 1.0
        policy = pp.AnyPreservationPolicy([
            pp.LatestN(n=keep),
            # ties go to the earlier step, as in the loop's bookkeeping
            pp.BestN(get_metric_fn=lambda m: (sign * float(m[best_metric]), -int(m["step"])), n=1,
                     keep_checkpoints_without_metrics=False)])
        self._remove_half_written()
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "meta"),
            options=ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                                 cleanup_tmp_directories=False))

    def _remove_half_written(self) -> None:
        """Deletes Orbax's temporary folders left by a killed save (never a committed step)."""
        import jax
        if jax.process_index() == 0 and self.directory.exists():
            for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
                print(f"removing half-written checkpoint {tmp}", flush=True)
                shutil.rmtree(tmp, ignore_errors=True)

    def save(self, step: int, state: TrainState, meta: dict, metrics: Optional[dict] = None) -> None:
        """Saves asynchronously (a host copy of the state is taken first)."""
        host = to_host(state)
        meta = {**meta, "step": int(step), "state_sha256": state_digest(host)}
        self.manager.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(host), meta=ocp.args.JsonSave(meta)),
            metrics=None if metrics is None else {**metrics, "step": int(step)}, force=True)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore(self, template: TrainState, step: Optional[int] = None) -> Optional[tuple[TrainState, dict]]:
        """(state, meta) of `step`, or of the newest good step when None; None if there is none."""
        self.manager.wait_until_finished()
        candidates = [step] if step is not None else self.steps()[::-1]
        target = to_host(template)
        for s in candidates:
            try:
                out = self.manager.restore(s, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
                state, meta = out["state"], dict(out["meta"])
                found = state_digest(to_host(state))
                if found != meta.get("state_sha256"):
                    raise ValueError(f"state hash {found[:12]} != saved {str(meta.get('state_sha256'))[:12]}")
                return state, meta
            except Exception as e:  # noqa: BLE001 - any failure to read back means "corrupt"
                moved = self._quarantine(s)
                log.warning("checkpoint %s/%d is corrupt or half-written (%s: %s); moved it to %s and "
                            "falling back to the previous one", self.directory, s, type(e).__name__,
                            str(e)[:300], moved)
                print(f"WARNING: checkpoint {self.directory}/{s} is corrupt or half-written "
                      f"({type(e).__name__}: {str(e)[:200]}); moved to {moved}; using the previous one",
                      flush=True)
                if step is not None:
                    raise
        return None

    def _quarantine(self, step: int) -> Path:
        import jax
        dst = self.directory.parent / (self.directory.name + ".corrupt") / str(step)
        if jax.process_index() == 0:
            src = self.directory / str(step)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                shutil.rmtree(dst)
            if src.exists():
                shutil.move(str(src), str(dst))
        self.manager.reload()
        return dst

    def close(self) -> None:
        """Waits for async saves, then releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


class BestTracker:
    """The best-checkpoint and early-stopping rule every trainer uses.

    `update(step, value)` at each epoch end: the step becomes the best when `value` is better than the
    best so far (`lower_is_better(metric)` decides the direction; a tie keeps the earlier step);
    otherwise one more bad epoch, and with `patience` > 0 that many bad epochs in a row stop the run.
    `meta` is the bookkeeping a checkpoint stores (best_value, best_step, bad_epochs, stopped_early),
    so a resumed run continues the same count."""

    def __init__(self, metric: str, patience: int = 0, meta: Optional[dict] = None):
        self.metric, self.patience = metric, int(patience)
        self.lower = lower_is_better(metric)
        m = meta or {}
        self.meta = {"best_value": m.get("best_value"), "best_step": m.get("best_step"),
                     "bad_epochs": int(m.get("bad_epochs", 0)),
                     "stopped_early": bool(m.get("stopped_early", False))}

    @property
    def stopped(self) -> bool:
        return self.meta["stopped_early"]

    def value_of(self, metrics: dict) -> float:
        if self.metric not in metrics:
            raise KeyError(f"config.train.best_metric={self.metric!r}: expected one of {sorted(metrics)}")
        return metrics[self.metric]

    def update(self, step: int, value: float) -> tuple[bool, bool]:
        """(is_best, stop) after an epoch that ended at `step` with `value`."""
        best = self.meta["best_value"]
        worse = best is not None and (value >= best if self.lower else value <= best)
        if not worse:
            self.meta.update(best_value=value, best_step=int(step), bad_epochs=0)
            return True, False
        self.meta["bad_epochs"] += 1
        if self.patience and self.meta["bad_epochs"] >= self.patience:
            self.meta["stopped_early"] = True
        return False, self.meta["stopped_early"]


@dataclasses.dataclass
class Restored:
    """A trained run read back: its task, TrainState and frozen variables."""

    task: object
    state: TrainState
    frozen: object

    @property
    def variables(self) -> dict:
        return {"params": self.state.params, "frozen": self.frozen}

    @property
    def step(self) -> int:
        return int(self.state.step)


def restore(config, workdir, data=None, *, which: str = "best") -> Restored:
    """The run in `workdir` at its best checkpoint (by config.train.best_metric; the last one when no
    best is kept) with which="best", or at its last checkpoint with which="last". `data` (a
    `train.data.Data`, built from config.data when None) gives the shapes of the state."""
    from cervix_jax.train.state import create_state, make_optimizer
    from cervix_jax.train.task import make_task

    if which not in ("best", "last"):
        raise ValueError(f"restore: which must be 'best' or 'last', found {which!r}")
    if data is None:
        from cervix_jax.train.data import local_data
        data = local_data(config)
    task = make_task(config)
    state, frozen = create_state(task, make_optimizer(config.train), seed=config.seed,
                                 image_shape=data.image_shape, num_examples=data.num_examples)
    ckpts = Checkpoints(Path(workdir) / "checkpoints", keep=config.train.keep,
                        best_metric=config.train.best_metric)
    try:
        latest = ckpts.restore(state)
        if latest is None:
            raise FileNotFoundError(f"{ckpts.directory}: no checkpoint; run `launch.py train` first")
        state, meta = latest
        best = meta.get("best_step")
        if which == "best" and best is not None and best != int(state.step) and best in ckpts.steps():
            state, meta = ckpts.restore(state, step=best)
    finally:
        ckpts.close()
    return Restored(task=task, state=state, frozen=frozen)
