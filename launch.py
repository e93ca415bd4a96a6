"""The one entry point of cervix-jax.

    python launch.py <mode> --config configs/<file>.py[:arg] --workdir DIR [--config.key=value ...]

modes: prepare (build the dataset), train, eval, explain, sweep (then its reports), report (the reports
of config.sweep.reports on an existing workdir), demo (= prepare + train + eval + explain), review,
review-summary. `prepare --rebuild` rebuilds a cervix_folder build whose inputs changed (without it such
a build is refused as stale, exit 2). Unknown config keys, values of the wrong type and values out of
range fail at once, all of them listed. `train`/`sweep`/`demo` save the config to WORKDIR/config.json
once and refuse a later config that differs outside an allow-list (`--force_new_config` accepts it);
they and `review` hold a workdir lock. `eval`/`explain`/`report` never write config.json (`--out DIR`
puts their results elsewhere; required on a sweep point). Multi-host: pass
--coordinator/--num_processes/--process_id (or set config.parallel.distributed=True to read the standard
environment). See docs/training.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

MODES = ("prepare", "train", "eval", "explain", "sweep", "report", "demo", "review", "review-summary")

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<file>.py[:arg]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, figures)")
_COORDINATOR = flags.DEFINE_string("coordinator", "", "multi-host: host:port of process 0")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "multi-host: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "multi-host: this process's index")
_SPLIT = flags.DEFINE_string("split", "test", "review: the split to review")
_PORT = flags.DEFINE_integer("port", 8765, "review: port")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "review: interface to bind")
_REVIEWER = flags.DEFINE_string("reviewer", None, "review: reviewer name")
_BLIND = flags.DEFINE_boolean("blind", False, "review: hide method names (panels A, B, shuffled)")
_ALLOW_REMOTE = flags.DEFINE_boolean("allow_remote", False, "review: allow binding a non-loopback host")
_FORCE_NEW_CONFIG = flags.DEFINE_boolean(
    "force_new_config", False, "train/sweep/demo: accept a config that differs from WORKDIR/config.json "
    "outside the allow-list (the change is recorded in WORKDIR/config_changes.jsonl)")
_OUT = flags.DEFINE_string("out", "", "eval/explain: results folder instead of WORKDIR/eval or "
                           "WORKDIR/explain/<split> (required on a sweep point)")
_REBUILD = flags.DEFINE_boolean("rebuild", False, "prepare/demo: delete and rebuild a cervix_folder build "
                                "whose inputs changed (otherwise such a build is refused as stale)")
WRITERS = ("train", "sweep", "demo")


def run(mode: str, config, workdir: Path) -> dict:
    """Runs one mode; returns what it produced (for tests and the shell)."""
    if mode == "review":
        from cervix_jax import review
        from cervix_jax.train.lock import workdir_lock
        with workdir_lock(workdir / "review", "review"):   # one server per workdir: no lost ratings
            review.serve(workdir, split=_SPLIT.value, port=_PORT.value, host=_HOST.value,
                         reviewer=_REVIEWER.value, blind=_BLIND.value, allow_remote=_ALLOW_REMOTE.value)
        return {}
    if mode == "review-summary":
        from cervix_jax import review
        return {"summary": review.summarize(workdir, split=_SPLIT.value)}
    if mode == "prepare":
        return prepare(config)
    import contextlib

    import jax

    from cervix_jax.train import identity
    if mode == "report":   # reads the points; writes only the reports' own files
        from cervix_jax import reports
        identity.check_read_only(config, workdir, mode=mode)
        return reports.write(config, workdir)
    if mode in WRITERS:
        from cervix_jax.train.lock import workdir_lock
        main_process = jax.process_index() == 0
        with contextlib.ExitStack() as stack:
            if main_process:
                stack.enter_context(workdir_lock(workdir, mode))
                stack.enter_context(identity.recorded(config, workdir, mode=mode,
                                                      force=_FORCE_NEW_CONFIG.value))
            return _write_mode(mode, config, workdir)
    if mode in ("eval", "explain"):
        identity.check_read_only(config, workdir, mode=mode)
        out = Path(_OUT.value) if _OUT.value else None
        if mode == "eval":
            from cervix_jax.train.evaluate import evaluate
            return evaluate(config, workdir, out_dir=out)
        from cervix_jax.train.evaluate import explain_split
        return {"explain_dir": str(explain_split(config, workdir, out_dir=out))}
    raise app.UsageError(f"mode: expected one of {MODES}, found {mode!r}")


def _write_mode(mode: str, config, workdir: Path) -> dict:
    if mode == "train":
        from cervix_jax.train.loop import train
        return train(config, workdir)
    if mode == "sweep":
        from cervix_jax import reports
        from cervix_jax.train.sweep import sweep
        out = sweep(config, workdir)
        if out["status"] == "finished":
            out["reports"] = reports.write(config, workdir)
        return out
    from cervix_jax.train.evaluate import evaluate, explain_split
    from cervix_jax.train.loop import train
    out = {"prepare": prepare(config), "train": train(config, workdir)}
    if out["train"]["status"] == "interrupted":
        return out
    out["eval"] = evaluate(config, workdir)
    out["explain_dir"] = str(explain_split(config, workdir))
    if config.model.name == "patch":   # paper A: weights on the cervix, regulator movement (eval/)
        from cervix_jax.reports.patch_run import write as patch_summary
        out["patch_weights"] = {k: v for k, v in patch_summary(config, workdir).items() if k != "per_image"}
    return out


def prepare(config) -> dict:
    """Builds the tfds dataset of config.data (in-memory `memory/<n>` data has nothing to build)."""
    from cervix_jax.data.builders import load_source
    source, info = load_source(config.data, rebuild=_REBUILD.value)
    return {"prepared": config.data.name, "examples": len(source),
            "result": str(info.data_dir) if info is not None else "in-memory data: nothing to build"}


def main(argv):
    if len(argv) != 2 or argv[1] not in MODES:
        raise app.UsageError(f"usage: launch.py <mode> --config FILE.py[:arg] --workdir DIR; "
                             f"mode is one of {MODES}; found {argv[1:]}")
    mode = argv[1]
    logging.set_verbosity(logging.WARNING)  # Orbax and tfds log every step at INFO
    if _WORKDIR.value is None and mode != "prepare":
        raise app.UsageError("--workdir is required")
    if _CONFIG.value is None and mode not in ("review", "review-summary"):
        raise app.UsageError("--config is required")
    config = _CONFIG.value
    if config is not None:
        problems = config_problems(config, mode)
        if problems:
            print("config errors:\n  " + "\n  ".join(problems), file=sys.stderr, flush=True)
            return 1
    if _COORDINATOR.value or (config is not None and config.parallel.distributed):
        from cervix_jax.train.parallel import initialize_distributed
        initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from cervix_jax.train.errors import RunRefused
    try:
        out = run(mode, config, Path(_WORKDIR.value or "."))
    except FloatingPointError as e:   # loop.NonFiniteLossError / NonFiniteScoreError: names step and ids
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        return 3
    except RunRefused as e:           # config changed, workdir in use, checkpoints of another config...
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        return 2
    if mode == "demo":
        from cervix_jax.train.demo_report import table
        print(table([Path(_WORKDIR.value)]), flush=True)
        return 0
    from cervix_jax.train.rundir import strict_dumps
    print(strict_dumps(out, default=str, indent=1)[:4000], flush=True)
    return 0


def config_problems(config, mode: str) -> list[str]:
    """Every out-of-range value of `config` (and of each sweep point's config, for `sweep`)."""
    from cervix_jax.train.config import validate
    problems = validate(config)
    if mode == "sweep" and not problems:
        from cervix_jax.train.sweep import grid_points, point_config, point_name
        try:
            points = grid_points(config)
        except ValueError as e:
            return [str(e)]
        for p in points:
            try:
                pc = point_config(config, p)
            except (KeyError, TypeError, ValueError) as e:
                problems.append(f"sweep point {point_name(p)}: {e}")
                continue
            problems += [f"sweep point {point_name(p)}: {q}" for q in validate(pc)]
    return problems


def check_overrides(argv: list[str]) -> list[str]:
    """All problems with the `--config.a.b=v` overrides of argv at once: unknown keys (with the
    keys that exist there) and values that do not parse as the field's type."""
    import ast

    args = list(argv[1:])
    path = None
    for i, a in enumerate(args):
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif a == "--config" and i + 1 < len(args):
            path = args[i + 1]
    if path is None:
        return []
    from cervix_jax.train.config import load_config
    try:
        config = load_config(path)
    except FileNotFoundError as e:
        return [str(e)]
    except (ValueError, KeyError, TypeError) as e:   # e.g. a config file's unknown argument
        return [f"--config={path}: {e}"]
    errors = []
    for i, a in enumerate(args):
        if not a.startswith("--config."):
            continue
        key, eq, value = a[len("--config."):].partition("=")
        if not eq:
            value = args[i + 1] if i + 1 < len(args) else ""
        node = config
        parts = key.split(".")
        for j, part in enumerate(parts):
            if not hasattr(node, "keys") or part not in node:
                have = sorted(node.keys()) if hasattr(node, "keys") else []
                errors.append(f"--config.{key}: unknown key {'.'.join(parts[:j + 1])!r}"
                              f"{'; keys there: ' + ', '.join(have) if have else ''}")
                break
            node = node[part]
        else:
            kind = type(node)
            try:
                if kind is bool:
                    if value.lower() not in ("true", "false", "1", "0"):
                        raise ValueError("expected true/false")
                elif kind in (int, float):
                    kind(value)
                elif kind in (tuple, list):
                    parsed = ast.literal_eval(value)
                    if not isinstance(parsed, (tuple, list)):
                        raise ValueError("expected a tuple such as (1, 2)")
            except (ValueError, SyntaxError) as e:
                errors.append(f"--config.{key}={value!r}: expected {kind.__name__} "
                              f"(default {node!r}): {e}")
    return errors


if __name__ == "__main__":
    _problems = check_overrides(sys.argv)
    if _problems:
        sys.exit("config errors:\n  " + "\n  ".join(_problems))
    app.run(main)
