"""Orbax checkpoints of a `TrainState` plus a JSON `meta` (early-stopping bookkeeping, a SHA-256
of the state) under `WORKDIR/checkpoints/<step>/`.

Keeps the last `keep` steps and the best one by `best_metric` (Orbax preservation policies).
Saves are async; `close()` waits for them. On restore, the newest step that reads back and matches
its hash wins. Two kinds of failure are told apart:

- integrity (the Orbax metadata or `meta` does not read back, the arrays do not, or the SHA-256 of
  what was read differs from the saved one): the step is reported and moved to
  `WORKDIR/checkpoints.corrupt/<step>` (`<step>.1`, `<step>.2`, ... when that entry exists: a
  quarantined checkpoint is never overwritten), and the one before it is tried;
- structure (the checkpoint reads back but its tree of arrays, keys, shapes or dtypes differs from
  the state this config builds): a config error. `CheckpointMismatchError` names the differing keys
  and shapes; nothing is moved.

When committed or quarantined checkpoints exist and none restores, `NoUsableCheckpointError` stops
the run instead of starting it again from step 0.
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

from cervix_jax.train.errors import RunRefused
from cervix_jax.train.parallel import to_host
from cervix_jax.train.state import TrainState

log = logging.getLogger(__name__)


class CheckpointMismatchError(RunRefused, ValueError):
    """A checkpoint reads back but was written for another state tree (a different config)."""


class NoUsableCheckpointError(RunRefused, RuntimeError):
    """Checkpoints existed (or were quarantined) but none restores: the run refuses to start over."""


def _key_name(entry) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def tree_signature(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    """{dotted key: (shape, dtype)} of every array leaf (Orbax's own naming: `opt_state.0.mu.conv1.bias`)."""
    import jax
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            continue
        key = ".".join(_key_name(e) for e in path)
        out[key] = (tuple(int(d) for d in leaf.shape), str(np.dtype(leaf.dtype)))
    return out


def describe_mismatch(saved: dict, expected: dict, limit: int = 8) -> str:
    """The differences between two `tree_signature`s, for an error message ('' when equal)."""
    only_saved = sorted(set(saved) - set(expected))
    only_expected = sorted(set(expected) - set(saved))
    differ = sorted(k for k in set(saved) & set(expected) if saved[k] != expected[k])

    def cut(keys):
        return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
    parts = []
    if only_saved:
        parts.append(f"keys only in the checkpoint: {cut(only_saved)}")
    if only_expected:
        parts.append(f"keys only in this config's state: {cut(only_expected)}")
    if differ:
        parts.append("shape/dtype differ: " + cut([
            f"{k} (checkpoint {saved[k][0]} {saved[k][1]}, config {expected[k][0]} {expected[k][1]})"
            for k in differ]))
    return "; ".join(parts)


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

    def quarantined(self) -> list[Path]:
        """Entries of `checkpoints.corrupt/` (checkpoints moved aside after an integrity failure)."""
        d = self._quarantine_dir()
        return sorted(d.iterdir()) if d.is_dir() else []

    def _saved_signature(self, step: int) -> dict:
        from absl import logging as absl_logging
        level = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.ERROR)   # Orbax warns that the item has no step metadata
        try:
            md = ocp.StandardCheckpointer().metadata(self.directory / str(step) / "state")
        finally:
            absl_logging.set_verbosity(level)
        tree = getattr(md, "item_metadata", md)
        if tree is None:
            raise FileNotFoundError(f"{self.directory / str(step) / 'state'}: no Orbax tree metadata")
        return tree_signature(tree)

    def restore(self, template: TrainState, step: Optional[int] = None) -> Optional[tuple[TrainState, dict]]:
        """(state, meta) of `step`, or of the newest good step when None; None when there never were
        checkpoints here. Raises `CheckpointMismatchError` for a checkpoint of another state tree and
        `NoUsableCheckpointError` when checkpoints existed and none restores (see the module doc)."""
        self.manager.wait_until_finished()
        candidates = [step] if step is not None else self.steps()[::-1]
        target = to_host(template)
        expected = tree_signature(target)
        failures = []
        for s in candidates:
            try:
                saved = self._saved_signature(s)
            except Exception as e:  # noqa: BLE001 - unreadable Orbax metadata: an integrity failure
                failures.append(self._integrity_failure(s, e))
                continue
            diff = describe_mismatch(saved, expected)
            if diff:
                raise CheckpointMismatchError(
                    f"checkpoint {self.directory}/{s} was written for another state tree than this config "
                    f"builds ({diff}). This is a config difference, not damage: nothing was moved. Run with "
                    f"the config the run was trained with (its config.json), or use a new workdir.")
            try:
                out = self.manager.restore(s, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
                state, meta = out["state"], dict(out["meta"])
                found = state_digest(to_host(state))
                if found != meta.get("state_sha256"):
                    raise ValueError(f"state hash {found[:12]} != saved {str(meta.get('state_sha256'))[:12]}")
                return state, meta
            except Exception as e:  # noqa: BLE001 - the structure matched: failing to read back is damage
                failures.append(self._integrity_failure(s, e))
        if failures or (step is None and self.quarantined()):
            moved = failures or [f"earlier: {p}" for p in self.quarantined()]
            raise NoUsableCheckpointError(
                f"{self.directory}: no usable checkpoint; " + "; ".join(moved) + f". Refusing to start again "
                f"from step 0: inspect {self._quarantine_dir()}, then move it away (or use a new workdir) "
                f"to train from scratch.")
        return None

    def _integrity_failure(self, step: int, error: Exception) -> str:
        moved = self._quarantine(step)
        text = (f"checkpoint {self.directory}/{step} is corrupt or half-written ({type(error).__name__}: "
                f"{str(error)[:200]}); moved to {moved}")
        log.warning("%s", text)
        print(f"WARNING: {text}; trying the previous one", flush=True)
        return text

    def _quarantine_dir(self) -> Path:
        return self.directory.parent / (self.directory.name + ".corrupt")

    def _quarantine(self, step: int) -> Path:
        """Moves step to `checkpoints.corrupt/<step>` (or `<step>.<k>`: never over an existing entry)."""
        import jax
        root = self._quarantine_dir()
        dst, k = root / str(step), 0
        while dst.exists():
            k += 1
            dst = root / f"{step}.{k}"
        if jax.process_index() == 0:
            src = self.directory / str(step)
            root.mkdir(parents=True, exist_ok=True)
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
    directory = Path(workdir) / "checkpoints"
    has_steps = directory.is_dir() and any(c.name.isdigit() for c in directory.iterdir())
    if not has_steps and (Path(workdir) / "head.npz").exists():
        return _restore_head(task, state, frozen, workdir)
    if not directory.is_dir():   # a reader creates nothing in the workdir
        raise FileNotFoundError(f"{directory}: no checkpoint; run `launch.py train` first")
    ckpts = Checkpoints(directory, keep=config.train.keep, best_metric=config.train.best_metric)
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


def _restore_head(task, state, frozen, workdir) -> Restored:
    """A cached-feature trainer's point: its `head.npz` as the task's head params (backbone rebuilt
    by the task), checked against the head this config builds."""
    import jax
    import jax.numpy as jnp

    from cervix_jax.train import rundir
    head = rundir.read_head(workdir)
    expected = jax.tree.map(lambda x: tuple(x.shape), state.params)
    found = {"classifier": {"kernel": tuple(head["kernel"].shape), "bias": tuple(head["bias"].shape)}}
    if expected != found:
        raise CheckpointMismatchError(
            f"{Path(workdir) / 'head.npz'}: head of shapes {found}, but this config builds {expected}: "
            f"use the point's config (its config.json)")
    params = {"classifier": {"kernel": jnp.asarray(head["kernel"]), "bias": jnp.asarray(head["bias"])}}
    return Restored(task=task, state=state.replace(params=params, step=jnp.asarray(head["step"], jnp.int32)),
                    frozen=frozen)
