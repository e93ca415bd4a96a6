"""Runs you can trust, in process: a checkpoint of another config is a config error (nothing moved),
a quarantined checkpoint is never overwritten, unusable checkpoints stop the run instead of a silent
restart; config identity (allow-list, forced changes, read-only modes write nothing); the workdir
lock (second writer refused, stale lock taken over); value validation (every problem at once);
non-finite inputs and scores never become a class, and the JSON written is strict."""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from cervix_jax.train import identity, loop, scoring
from cervix_jax.train.checkpoint import (Checkpoints, CheckpointMismatchError, NoUsableCheckpointError)
from cervix_jax.train.config import base_config, validate
from cervix_jax.train.data import local_data
from cervix_jax.train.lock import LOCK_NAME, WorkdirLockedError, workdir_lock


def tiny_config(**train):
    c = base_config("tiny")
    c.data.name, c.data.pad_to, c.data.image_size = "memory/48", (12, 12), 12
    c.model.width = 4
    c.train.update({**dict(batch_size=8, epochs=2, log_every=1, checkpoint_every=1, keep=3,
                           best_metric="val_accuracy", lr=3e-3), **train})
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    wd = tmp_path_factory.mktemp("run")
    summary = loop.train(tiny_config(), wd)
    assert summary["status"] == "finished"
    return wd


def template(config):
    from cervix_jax.train.state import create_state, make_optimizer
    from cervix_jax.train.task import make_task
    data = local_data(config)
    return create_state(make_task(config), make_optimizer(config.train), seed=config.seed,
                        image_shape=data.image_shape, num_examples=data.num_examples)[0]


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def corrupt(step_dir, rng):
    for f in (step_dir / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 64:
            data = bytearray(f.read_bytes())
            i = int(rng.integers(16, len(data) - 16))
            data[i:i + 8] = bytes(255 - x for x in data[i:i + 8])
            f.write_bytes(bytes(data))


@pytest.mark.parametrize("change", ["optimizer", "width", "example_state"])
def test_checkpoint_of_another_config_is_a_config_error_and_nothing_moves(trained, tmp_path, change):
    wd = tmp_path / "run"
    shutil.copytree(trained, wd)
    before = tree_bytes(wd / "checkpoints")
    c = tiny_config()
    if change == "optimizer":
        c.train.optimizer = "sgd"
    elif change == "width":
        c.model.width = 6
    else:
        c.model.example_state = True
    ck = Checkpoints(wd / "checkpoints", keep=3, best_metric="val_accuracy")
    with pytest.raises(CheckpointMismatchError) as err:
        ck.restore(template(c))
    ck.close()
    expected = {"optimizer": "opt_state.0.mu.conv1.kernel",
                "width": "(3, 3, 3, 4) float32, config (3, 3, 3, 6)",
                "example_state": "example_state.count"}[change]
    assert expected in str(err.value)
    assert not (wd / "checkpoints.corrupt").exists()
    assert tree_bytes(wd / "checkpoints") == before
    if change == "optimizer":
        with pytest.raises(CheckpointMismatchError):   # train refuses too, and still moves nothing
            loop.train(c, wd)
        assert tree_bytes(wd / "checkpoints") == before


def test_quarantine_never_overwrites_an_entry(trained, tmp_path, rng):
    wd = tmp_path / "run"
    shutil.copytree(trained, wd)
    ck = Checkpoints(wd / "checkpoints", keep=3, best_metric="val_accuracy")
    steps = ck.steps()
    ck.close()
    latest = steps[-1]
    earlier = wd / "checkpoints.corrupt" / str(latest)
    earlier.mkdir(parents=True)
    sentinel = rng.bytes(32)
    (earlier / "kept").write_bytes(sentinel)
    corrupt(wd / "checkpoints" / str(latest), rng)
    ck = Checkpoints(wd / "checkpoints", keep=3, best_metric="val_accuracy")
    state, meta = ck.restore(template(tiny_config()))
    ck.close()
    assert meta["step"] == steps[-2]
    assert (earlier / "kept").read_bytes() == sentinel
    assert (wd / "checkpoints.corrupt" / f"{latest}.1" / "state").is_dir()


def test_no_usable_checkpoint_stops_instead_of_starting_over(trained, tmp_path, rng):
    wd = tmp_path / "run"
    shutil.copytree(trained, wd)
    ck = Checkpoints(wd / "checkpoints", keep=3, best_metric="val_accuracy")
    steps = ck.steps()
    ck.close()
    for s in steps:
        corrupt(wd / "checkpoints" / str(s), rng)
    rows = (wd / "metrics.jsonl").read_text()
    with pytest.raises(NoUsableCheckpointError, match="Refusing to start again"):
        loop.train(tiny_config(), wd)
    assert sorted(p.name for p in (wd / "checkpoints.corrupt").iterdir()) == sorted(map(str, steps))
    with pytest.raises(NoUsableCheckpointError):   # the next command refuses too (nothing left to try)
        loop.train(tiny_config(), wd)
    assert (wd / "metrics.jsonl").read_text() == rows


# --- config identity -------------------------------------------------------------------------------

def test_config_identity_allow_list_and_forced_changes(tmp_path, rng):
    c = tiny_config()
    identity.record(c, tmp_path, mode="train")
    saved = (tmp_path / "config.json").read_text()
    changed = tiny_config(lr=float(rng.uniform(0.01, 0.5)))
    changed.seed = int(rng.integers(1, 100))
    with pytest.raises(identity.ConfigChangedError) as err:
        identity.record(changed, tmp_path, mode="train")
    assert f"seed: 0 -> {changed.seed}" in str(err.value) and "train.lr: 0.003 ->" in str(err.value)
    assert (tmp_path / "config.json").read_text() == saved          # refused: nothing written
    epochs = int(rng.integers(3, 9))
    accepted = identity.record(tiny_config(epochs=epochs), tmp_path, mode="train")
    assert accepted == {"train.epochs": (2, epochs)}
    assert json.loads((tmp_path / "config.json").read_text())["train"]["epochs"] == epochs
    identity.record(changed, tmp_path, mode="train", force=True)
    log = [json.loads(r) for r in (tmp_path / identity.CHANGES_NAME).read_text().splitlines()]
    assert [r["forced"] for r in log] == [False, True] and "seed" in log[1]["changes"]
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == changed.seed


def test_read_only_check_refuses_and_writes_nothing(tmp_path):
    identity.record(tiny_config(), tmp_path, mode="train")
    before = tree_bytes(tmp_path)
    fewer = tiny_config()
    fewer.explain.max_images = 3
    saved = tiny_config().explain.max_images
    assert identity.check_read_only(fewer, tmp_path, mode="explain") == {"explain.max_images": (saved, 3)}
    other = tiny_config()
    other.model.width = 9
    with pytest.raises(identity.ConfigChangedError, match="model.width: 4 -> 9"):
        identity.check_read_only(other, tmp_path, mode="eval")
    assert tree_bytes(tmp_path) == before


# --- workdir lock --------------------------------------------------------------------------------

def test_second_writer_is_refused_naming_the_holder(tmp_path):
    with workdir_lock(tmp_path, "train") as held:
        info = json.loads((tmp_path / LOCK_NAME).read_text())
        assert info == held and info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        with pytest.raises(WorkdirLockedError, match=f"`train` \\(pid {os.getpid()} on host"):
            with workdir_lock(tmp_path, "sweep"):
                pass
    assert not (tmp_path / LOCK_NAME).exists()
    with workdir_lock(tmp_path, "sweep"):         # free again
        pass


def test_stale_lock_is_taken_over_and_a_live_one_is_not(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                  "mode": "train", "started": "then"}))
    with workdir_lock(tmp_path, "train"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "stale lock" in capsys.readouterr().out
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:   # a file naming a live process (a file system without flock): refused
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": alive.pid, "host": socket.gethostname(),
                                                      "mode": "review", "started": "now"}))
        with pytest.raises(WorkdirLockedError, match=f"pid {alive.pid}"):
            with workdir_lock(tmp_path, "train"):
                pass
    finally:
        alive.kill()
        alive.wait()


# --- validation ---------------------------------------------------------------------------------

BAD_VALUES = [("train.batch_size", 0), ("train.epochs", -1), ("train.log_every", 0),
              ("train.checkpoint_every", 0),
              ("train.keep", -1), ("train.patience", -1), ("train.lr", 0.0), ("data.pad_to", (0, 16)),
              ("data.pad_to", (-16, 16)), ("data.val_fraction", -0.1), ("data.test_fraction", 1.5),
              ("model.width", -3), ("explain.max_images", -1), ("explain.threshold", 2.0),
              ("data.normalization", "foo"), ("data.blur", 4), ("train.optimizer", "lion"),
              ("explain.methods", ("cam", "nope")), ("parallel.wrapper", "vmap"), ("seed", -2)]


def test_validation_reports_every_bad_value_at_once(rng):
    assert validate(tiny_config()) == []
    picks = rng.choice(len(BAD_VALUES), size=int(rng.integers(3, 7)), replace=False)
    c = tiny_config()
    chosen = {}
    for i in picks:
        key, value = BAD_VALUES[i]
        chosen[key] = value
    for key, value in chosen.items():
        node, leaf = key.rsplit(".", 1) if "." in key else ("", key)
        target = c
        for part in filter(None, node.split(".")):
            target = target[part]
        target[leaf] = value
    problems = validate(c)
    assert {p.split("=", 1)[0] for p in problems} == {f"config.{k}" for k in chosen}, problems


@pytest.mark.parametrize("path,arg", [("configs/tiny.py", None), ("configs/tiny.py", "state"),
                                      ("configs/demo.py", None), ("configs/demo.py", "patch"),
                                      ("configs/demo.py", "tiny"),
                                      ("configs/pyramid.py", "p3,p6,p7,runlocal"),
                                      ("configs/pyramid.py", "sweep,small"), ("configs/patch.py", "runlocal"),
                                      ("configs/patch.py", "evidence"), ("configs/patch.py", "ps56,fixed"),
                                      ("configs/patch.py", "table2,cpu"), ("configs/patch.py", "ablation"),
                                      ("configs/retinanet.py", None), ("configs/baselines.py", None)])
def test_shipped_configs_are_valid(path, arg):
    import importlib.util
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert validate(module.get_config(arg)) == []


def test_tiny_config_rejects_unknown_args():
    from configs import tiny
    with pytest.raises(ValueError, match="unknown args \\['bogus'\\]"):
        tiny.get_config("bogus")


# --- non-finite inputs and scores ------------------------------------------------------------------

def strict_loads(text):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_nonfinite_input_is_flagged_and_never_a_class(trained, tmp_path, rng):
    from cervix_jax.explain.run import explain_to_dir
    from cervix_jax.train.checkpoint import restore
    c = tiny_config()
    data = local_data(c)
    run = restore(c, trained, data)
    task, variables = run.task, run.variables
    examples = [e for e in data.examples("test", 16) if e["label"] == 0][:3]
    k = int(rng.integers(0, len(examples)))
    image = examples[k]["image"].copy()
    image[tuple(rng.integers(0, s) for s in image.shape)] = rng.choice([np.nan, np.inf, -np.inf])
    examples[k]["image"] = image
    with pytest.warns(UserWarning, match=f"example {examples[k]['id']}"):
        explain_to_dir(task.explainable(variables), examples, str(tmp_path / "x"), methods=("cam",))
    items = {it["id"]: it for it in strict_loads((tmp_path / "x" / "index.json").read_text())["items"]}
    bad = items[examples[k]["id"]]
    assert "nonfinite_input" in bad["flags"] and bad["pred"] is None and bad["correct"] is False
    assert all(it["pred"] in (0, 1) for i, it in items.items() if i != examples[k]["id"])


def test_nan_scores_are_no_class_and_json_stays_strict(trained, tmp_path):
    import jax
    from cervix_jax.explain.run import explain_to_dir
    from cervix_jax.train.checkpoint import restore
    c = tiny_config()
    data = local_data(c)
    run = restore(c, trained, data)
    task, variables = run.task, run.variables
    poisoned = jax.tree.map(lambda x: np.array(x), variables)
    poisoned["params"]["dense"]["kernel"][:] = np.nan
    examples = [e for e in data.examples("test", 16) if e["label"] == 0][:2]
    assert examples
    explain_to_dir(task.explainable(poisoned), examples, str(tmp_path / "x"), methods=("cam",))
    index = strict_loads((tmp_path / "x" / "index.json").read_text())
    for item in index["items"]:
        assert item["pred"] is None and item["correct"] is False and item["score"] is None
        assert "nonfinite_scores" in item["flags"]
    # the engine's scoring names the examples instead of letting NaN through
    import functools
    from cervix_jax.train.parallel import data_parallel
    from cervix_jax.train.steps import eval_step
    p_eval = data_parallel(functools.partial(eval_step, task=task), c.parallel.wrapper, num_replicated=2)
    with pytest.raises(scoring.NonFiniteScoreError, match="ids \\["):
        scoring.score_split(p_eval, poisoned["params"], poisoned["frozen"], data.eval["test"])


def test_strict_json_writer():
    from cervix_jax.train.rundir import strict_dumps as dumps
    obj = {"a": float("nan"), "b": [1.0, float("inf"), np.float32(2.5)], "c": np.array([np.nan, 3.0])}
    assert strict_loads(dumps(obj)) == {"a": None, "b": [1.0, None, 2.5], "c": [None, 3.0]}
