"""Engine pieces in-process: every evaluation example scored exactly once (padded last batch)
against per-example predictions; early stopping and the kept best checkpoint; sweep points,
resumability and the mean/sd summary against NumPy."""
import csv
import json

import numpy as np

from cervix_jax import reports
from cervix_jax.train import identity, loop
from cervix_jax.train.checkpoint import Checkpoints, restore
from cervix_jax.train.config import base_config
from cervix_jax.train.data import local_data
from cervix_jax.train.scoring import score_split
from cervix_jax.train.sweep import grid_points, point_name, sweep


def tiny_config(**train):
    c = base_config("tiny")
    c.data.name, c.data.pad_to = "memory/56", (10, 10)
    c.model.width = 4
    c.train.update({**dict(batch_size=8, epochs=3, log_every=3, checkpoint_every=100, keep=1,
                           best_metric="val_accuracy"), **train})
    return c


def test_early_stopping_keeps_best_and_scores_every_example_once(tmp_path):
    c = tiny_config(lr=0.0, patience=1)  # lr 0: val never improves after epoch 1
    summary = loop.train(c, tmp_path)
    data = local_data(c)
    spe = len(data.train)
    assert summary["status"] == "stopped_early" and summary["step"] == 2 * spe
    assert summary["best_step"] == spe
    ck = Checkpoints(tmp_path / "checkpoints", keep=1, best_metric="val_accuracy")
    assert ck.steps() == [spe, 2 * spe]  # the best (epoch 1) and the last
    ck.close()
    assert loop.train(c, tmp_path)["step"] == 2 * spe  # a stopped run stays stopped
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "val"] == [spe, 2 * spe]

    run = restore(c, tmp_path, data)
    task, variables, step = run.task, run.variables, run.step
    assert step == spe
    import functools
    from cervix_jax.train.parallel import data_parallel
    from cervix_jax.train.steps import eval_step
    loader = data.eval["test"]
    n = len(loader.indices)
    assert n % c.train.batch_size, "the test split should need a padded last batch"
    p_eval = data_parallel(functools.partial(eval_step, task=task), "pmap", num_replicated=2)
    scored = score_split(p_eval, variables["params"], variables["frozen"], loader)
    np.testing.assert_array_equal(scored["id"], np.sort(loader.indices))
    for k, i in enumerate(scored["id"]):
        example = loader.source[int(i)]   # memory data: source position = id
        x = example["image"].astype(np.float64)[None] / 255.0
        p = task.predict(variables["params"], {}, {"image": np.float32(x)})
        np.testing.assert_allclose(scored["score"][k], np.asarray(p)[0], rtol=1e-5, atol=1e-6)
        assert scored["label"][k] == example["label"]


def test_sweep_runs_points_resumes_and_summarizes(tmp_path, monkeypatch):
    import jax
    cleared = []
    real_clear = jax.clear_caches
    monkeypatch.setattr(jax, "clear_caches", lambda: (cleared.append(1), real_clear())[1])
    c = tiny_config(epochs=1)
    c.sweep.grid = (("model.width", (2, 4)), ("seed", (0, 1)))
    points = grid_points(c)
    assert len(points) == 4 and points[1] == {"model.width": 2, "seed": 1}
    identity.record(c, tmp_path, mode="sweep")   # the root config.json, as `launch.py sweep` writes it
    out = sweep(c, tmp_path)
    assert out["status"] == "finished"
    assert len(cleared) == 4             # JAX's caches cleared after every point (memory maps, see sweep.py)
    reports.write(c, tmp_path)   # the summary, as `launch.py sweep` runs it at the end
    files = {point_name(p): tmp_path / "points" / point_name(p) / "eval" / "metrics.json" for p in points}
    mtimes = {k: f.stat().st_mtime_ns for k, f in files.items()}
    # the point configs really differ
    cfg = json.loads((tmp_path / "points" / point_name(points[3]) / "config.json").read_text())
    assert cfg["model"]["width"] == 4 and cfg["seed"] == 1
    # resumable: a second call re-runs nothing
    sweep(c, tmp_path)
    assert {k: f.stat().st_mtime_ns for k, f in files.items()} == mtimes
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["model.width"] for r in rows] == ["2", "4"]
    for r, width in zip(rows, (2, 4)):
        vals = [json.loads(files[point_name({"model.width": width, "seed": s})].read_text())
                ["test"]["at_val_threshold"]["f1"] for s in (0, 1)]
        np.testing.assert_allclose(float(r["f1"]), np.mean(vals), rtol=1e-9)
        np.testing.assert_allclose(float(r["f1_sd"]), np.std(vals, ddof=1), rtol=1e-9, atol=1e-12)
        assert r["n"] == "2"
    assert "±" in (tmp_path / "summary.md").read_text()
