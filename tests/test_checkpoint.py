"""Checkpoints: SIGKILL + resume is bitwise equal to an uninterrupted run, SIGTERM saves and exits
cleanly, a corrupt latest checkpoint falls back to the previous one, a NaN loss stops naming the
step and example ids. Tiny task with per-example state, in-memory data."""
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cervix_jax.train import loop
from cervix_jax.train.checkpoint import Checkpoints
from cervix_jax.train.config import base_config
from cervix_jax.train.data import local_data

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**train):
    c = base_config("tiny")
    c.data.name, c.data.pad_to = "memory/64", (12, 12)
    c.model.example_state = True
    c.train.update({**dict(batch_size=8, epochs=3, log_every=1, checkpoint_every=2, keep=2,
                           best_metric="val_accuracy", lr=3e-3), **train})
    return c


def final_state(workdir):
    """(params, example_state, meta) of the newest checkpoint, as NumPy."""
    c = tiny_config()
    data = local_data(c)
    ck = Checkpoints(Path(workdir) / "checkpoints", keep=2, best_metric="val_accuracy")
    from cervix_jax.train.state import create_state, make_optimizer
    from cervix_jax.train.task import make_task
    state, _ = create_state(make_task(c), make_optimizer(c.train), seed=c.seed,
                            image_shape=data.image_shape, num_examples=data.num_examples)
    state, meta = ck.restore(state)
    ck.close()
    import jax
    return jax.tree.map(np.asarray, state), meta


def assert_bitwise_equal(a, b):
    import jax
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(np.atleast_1d(x).view(np.uint8), np.atleast_1d(y).view(np.uint8)), \
            "resumed run differs bitwise"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    wd = tmp_path_factory.mktemp("uninterrupted")
    summary = loop.train(tiny_config(), wd)
    assert summary["status"] == "finished"
    return wd, summary


_KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from test_checkpoint import tiny_config
    from cervix_jax.train import loop
    at, sig = int(sys.argv[2]), getattr(signal, sys.argv[3])
    original = loop._Logger.train
    def train_and_maybe_die(self, step, epoch, metrics):
        original(self, step, epoch, metrics)
        if step == at:
            os.kill(os.getpid(), sig)
    loop._Logger.train = train_and_maybe_die
    print("SUMMARY", loop.train(tiny_config(), sys.argv[1])["status"], flush=True)
""")


def run_killer(workdir, step, sig):
    code = _KILLER.format(root=str(ROOT), tests=str(ROOT / "tests"))
    return subprocess.run([sys.executable, "-c", code, str(workdir), str(step), sig],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_sigkill_then_resume_is_bitwise_equal(reference, tmp_path, rng):
    ref_dir, ref_summary = reference
    total = ref_summary["total_steps"]
    # From step 5 on, the async save of step 2 has had two steps to finish; a save still in flight
    # when the kill comes is lost (SIGKILL), and the resume starts from the one before it.
    kill_at = int(rng.integers(5, total - 1))
    proc = run_killer(tmp_path, kill_at, "SIGKILL")
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = Checkpoints(tmp_path / "checkpoints", keep=2, best_metric="val_accuracy")
    steps = saved.steps()
    saved.close()
    assert steps and max(steps) <= kill_at < total
    summary = loop.train(tiny_config(), tmp_path)  # resume
    assert summary["status"] == "finished" and summary["step"] == total
    (a, meta_a), (b, meta_b) = final_state(ref_dir), final_state(tmp_path)
    assert_bitwise_equal(a, b)
    assert meta_a["state_sha256"] == meta_b["state_sha256"]
    # the resumed run's metrics.jsonl has each step once
    steps_logged = [r["step"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
                    if r["split"] == "train"]
    assert steps_logged == list(range(1, total + 1))


def test_sigterm_saves_and_exits_cleanly_then_resumes(reference, tmp_path, rng):
    ref_dir, ref_summary = reference
    stop_at = int(rng.integers(1, ref_summary["total_steps"] - 1)) | 1  # odd: off the schedule
    proc = run_killer(tmp_path, stop_at, "SIGTERM")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SUMMARY interrupted" in proc.stdout
    ck = Checkpoints(tmp_path / "checkpoints", keep=2, best_metric="val_accuracy")
    assert max(ck.steps()) == stop_at
    ck.close()
    loop.train(tiny_config(), tmp_path)
    assert_bitwise_equal(final_state(ref_dir)[0], final_state(tmp_path)[0])


def test_corrupt_latest_checkpoint_falls_back_to_previous(reference, tmp_path, capsys, rng):
    import shutil
    ref_dir, ref_summary = reference
    wd = tmp_path / "run"
    shutil.copytree(ref_dir, wd)
    ck = Checkpoints(wd / "checkpoints", keep=2, best_metric="val_accuracy")
    steps = ck.steps()
    ck.close()
    latest, previous = steps[-1], steps[-2]
    files = [f for f in (wd / "checkpoints" / str(latest) / "state").rglob("*") if f.is_file()]
    for f in files:  # flip bytes in the middle of every array file; truncate the rest
        data = bytearray(f.read_bytes())
        if len(data) > 64:
            i = int(rng.integers(16, len(data) - 16))
            data[i:i + 8] = bytes(255 - x for x in data[i:i + 8])
        f.write_bytes(bytes(data))
    state, meta = final_state(wd)
    assert meta["step"] == previous
    assert "corrupt" in capsys.readouterr().out
    assert (wd / "checkpoints.corrupt" / str(latest)).exists()
    summary = loop.train(tiny_config(), wd)  # redoes the lost steps
    assert summary["step"] == ref_summary["total_steps"]
    assert_bitwise_equal(final_state(ref_dir)[0], final_state(wd)[0])


def test_nonfinite_loss_names_step_and_ids_and_keeps_last_good(tmp_path, rng):
    c = tiny_config(epochs=2, checkpoint_every=3)
    data = local_data(c)
    spe, bs = len(data.train), c.train.batch_size
    orders = [data.train.indices[np.random.default_rng([c.seed, e]).permutation(len(data.train.indices))]
              for e in range(2)]
    first = {}  # id -> first (global step, epoch, batch)
    for e, order in enumerate(orders):
        for i in range(spe):
            for j in order[i * bs:(i + 1) * bs]:
                first.setdefault(int(j), (e * spe + i, e, i))
    poisoned = int(rng.choice([j for j, f in first.items() if f[0] >= 4]))
    bad_step, epoch, batch = first[poisoned]
    batch_ids = orders[epoch][batch * bs:(batch + 1) * bs]
    # an out-of-range label makes the tiny task's log-likelihood NaN (jnp gathers fill with NaN);
    # NaN pixels would not do: jitted relu on CPU maps NaN to 0
    source = data.train.source             # memory/<n>: an in-memory source, position = id
    label = source.arrays["label"].copy()
    label[poisoned] = 7
    source.arrays = {**source.arrays, "label": label}
    with pytest.raises(loop.NonFiniteLossError) as err:
        loop.train(c, tmp_path, data=data)
    msg = str(err.value)
    assert f"at step {bad_step + 1} (epoch {epoch}, batch {batch} " in msg
    ids = json.loads(msg.split("example ids ")[1].split(";")[0])
    assert poisoned in ids and sorted(ids) == sorted(batch_ids.tolist())
    ck = Checkpoints(tmp_path / "checkpoints", keep=2, best_metric="val_accuracy")
    saved_before = [s for s in range(1, bad_step + 1) if s % 3 == 0 or s % spe == 0]
    assert max(ck.steps()) == max(saved_before)
    state, _ = final_state(tmp_path)
    import jax
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))
    ck.close()
