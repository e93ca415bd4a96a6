"""Config identity: a run's config is saved once, and a later command must match it.

`train` (and `sweep`, `demo`) on a workdir that already holds `config.json` compares the new config
with it, key by key. A difference in a key of `ALLOWED_CHANGES` is accepted: `config.json` is updated
and the change is appended to `config_changes.jsonl`. Any other difference refuses the run, listing
every differing key with both values; `--force_new_config` accepts it anyway (the change is recorded
the same way), or use a new workdir.

Read-only modes (`eval`, `explain`) write nothing into the workdir's root: they compare too, and
refuse a difference outside `ALLOWED_CHANGES` + `EVAL_ALLOWED_CHANGES` (settings that only change
what is evaluated or explained, such as `data.blur` for paper B's blurred test images).
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from cervix_jax.train.errors import RunRefused

from cervix_jax.train import rundir

CONFIG_NAME = rundir.CONFIG
CHANGES_NAME = rundir.CONFIG_CHANGES

# Keys a resumed run may change: they do not change what a step computes.
ALLOWED_CHANGES: dict[str, str] = {
    "train.epochs": "extend (or shorten) a run",
    "train.log_every": "logging interval",
    "train.checkpoint_every": "checkpoint interval",
    "train.keep": "how many checkpoints are kept",
    "data.data_dir": "where the built dataset lives (the same data, moved)",
    "data.pixel_cache": "a cache of the same resized pixels",
    "parallel.wrapper": "pmap or shard_map (same steps)",
    "parallel.distributed": "multi-host start-up",
    "explain.*": "explanation settings (no effect on training)",
    "sweep.grid": "a sweep's grid (points are keyed by their values)",
    "sweep.trainer": "the sweep's trainer (the cached-feature heads match the ordinary runs)",
    "sweep.reports": "the reports written from the points",
}
# Further keys `eval` and `explain` may change: they only decide what is evaluated.
EVAL_ALLOWED_CHANGES: dict[str, str] = {
    "data.blur": "Gaussian blur of the test images (paper B's degradation)",
    "data.with_masks": "batches carry masks",
    "train.batch_size": "evaluation batch size",
    "train.patience": "early stopping (training only)",
    "train.lr": "learning rate (training only)",
}


class ConfigChangedError(RunRefused, ValueError):
    """The config differs from the run's saved config in keys that are not allowed to change."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a JSON object; lists are leaves."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def as_json(config) -> dict:
    """The config as the JSON object `config.json` holds (tuples become lists)."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def differences(saved: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """{key: (saved value, new value)} for every key that differs (missing = `<absent>`)."""
    a, b = flatten(saved), flatten(new)
    absent = "<absent>"
    return {k: (a.get(k, absent), b.get(k, absent)) for k in sorted(set(a) | set(b))
            if a.get(k, absent) != b.get(k, absent)}


def _allowed(key: str, allow: dict) -> bool:
    return key in allow or any(k.endswith(".*") and key.startswith(k[:-1]) for k in allow)


def _fmt(diff: dict) -> str:
    return "\n".join(f"  {k}: {json.dumps(old)} -> {json.dumps(new)}" for k, (old, new) in diff.items())


def saved_config(workdir) -> dict | None:
    path = Path(workdir) / CONFIG_NAME
    if not path.exists():
        return None
    try:
        return rundir.read_config(workdir)
    except ValueError as err:
        raise ConfigChangedError(f"{path}: not valid JSON ({err}); restore it or use a new workdir") from err


def record(config, workdir, *, mode: str, force: bool = False) -> dict:
    """For writers (`train`, `sweep`, `demo`): saves the config on first use, else checks it against
    the saved one (see the module doc). Returns the accepted differences."""
    workdir = Path(workdir)
    new = as_json(config)
    saved = saved_config(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if saved is None:
        if (workdir / "checkpoints").is_dir() and any((workdir / "checkpoints").iterdir()) and not force:
            raise ConfigChangedError(
                f"{workdir} holds checkpoints but no {CONFIG_NAME}: the config they were made with is "
                f"unknown. Pass --force_new_config to adopt this config for them, or use a new workdir.")
        rundir.write_config(workdir, new)
        return {}
    diff = differences(saved, new)
    refused = {k: v for k, v in diff.items() if not _allowed(k, ALLOWED_CHANGES)}
    if refused and not force:
        raise ConfigChangedError(
            f"`{mode}` on {workdir}: the config differs from the run's {CONFIG_NAME} in keys that may not "
            f"change on an existing run:\n{_fmt(refused)}\nKeys that may change: "
            f"{', '.join(ALLOWED_CHANGES)}. Use the run's config, a new --workdir, or --force_new_config "
            f"to accept the change (recorded in {CHANGES_NAME}).")
    if diff:
        rundir.append_config_change(workdir, {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mode": mode, "forced": bool(refused),
            "changes": {k: list(v) for k, v in diff.items()}})
        rundir.write_config(workdir, new)
        print(f"config changes accepted for {workdir} ({'forced' if refused else 'allowed'}):\n{_fmt(diff)}",
              flush=True)
    return diff


@contextlib.contextmanager
def recorded(config, workdir, *, mode: str, force: bool = False):
    """`record`, undone (config.json restored, the undo logged) when the block raises
    `CheckpointMismatchError`: a forced config the checkpoints cannot take is not adopted."""
    from cervix_jax.train.checkpoint import CheckpointMismatchError
    before = saved_config(workdir)
    diff = record(config, workdir, mode=mode, force=force)
    try:
        yield diff
    except CheckpointMismatchError:
        if diff and before is not None:
            rundir.write_config(workdir, before)
            rundir.append_config_change(workdir, {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mode": mode,
                "reverted": sorted(diff), "why": "the checkpoints were made for another state tree"})
        raise


def check_read_only(config, workdir, *, mode: str) -> dict:
    """For `eval`/`explain`: refuses a config that differs from the saved one outside the allowed
    keys; writes nothing. Returns the (allowed) differences; {} when there is no saved config."""
    saved = saved_config(workdir)
    if saved is None:
        return {}
    diff = differences(saved, as_json(config))
    allow = {**ALLOWED_CHANGES, **EVAL_ALLOWED_CHANGES}
    refused = {k: v for k, v in diff.items() if not _allowed(k, allow)}
    if refused:
        raise ConfigChangedError(
            f"`{mode}` on {workdir}: the config differs from the run's {CONFIG_NAME} (the config it was "
            f"trained with):\n{_fmt(refused)}\nUse the same config file and overrides as the run "
            f"(`{mode}` may change only: {', '.join(allow)}).")
    return diff
