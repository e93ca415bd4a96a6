"""Every `launch.py` mode through the command line, as a user runs it, on a real tfds-built dataset
(`synthetic_cervix/tiny`, built once by `launch.py prepare`) at smoke size:

- paper A's patch model with `make demo`'s config (`configs/demo.py:patch`): `demo` = prepare + train +
  eval + explain, ending with the short table; then `eval` on the finished run with blurred test images
  into another folder (the run's root untouched; val scores equal, test scores differ);
- paper B's head with `make demo`'s other config (`configs/demo.py`, tiny backbone) through `sweep`'s fast
  path over two blur levels (train/val identical, test differs), then `eval`/`explain` on a sweep point
  (refused without --out; with --out, evaluated from the point's head.npz, the point untouched);
- `train` refused on a config change and while another writer holds the workdir; `report` on the sweep;
- `review` started, a page and the items fetched over 127.0.0.1, a second server refused, stopped;
  `review-summary`.
Subprocesses share a JAX compilation cache, so later ones reuse what earlier ones compiled."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow   # each fixture runs a launch.py process that trains (> 30 s)

SMOKE = ["--config.data.name=synthetic_cervix/tiny", "--config.data.image_size=48",
         "--config.data.pad_to=(32,48)", "--config.train.batch_size=8", "--config.train.epochs=1",
         "--config.explain.max_images=4"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("jax_cache")
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def launch(env, *args, timeout=600):
    return subprocess.run([sys.executable, "launch.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return p


def strict_json(path):
    def refuse(token):
        raise ValueError(f"{path}: non-standard JSON token {token}")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def read_scores(path):
    rows = list(csv.DictReader(Path(path).open()))
    return {int(r["id"]): (int(r["label"]), float(r["score"])) for r in rows}


def snapshot(root, recursive=False):
    files = sorted(Path(root).rglob("*") if recursive else Path(root).iterdir())
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in files}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, env):
    d = tmp_path_factory.mktemp("tfds")
    ok(launch(env, "prepare", "--config", "configs/demo.py:patch", "--config.data.name=synthetic_cervix/tiny",
              f"--config.data.data_dir={d}"))
    return d


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory, env, data_dir):
    wd = tmp_path_factory.mktemp("patch") / "run"
    p = ok(launch(env, "demo", "--config", "configs/demo.py:patch", "--workdir", wd, *SMOKE,
                  f"--config.data.data_dir={data_dir}", "--config.model.mlp_hidden=(8,)"))
    return wd, p


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory, env, data_dir):
    wd = tmp_path_factory.mktemp("sweep") / "run"
    p = ok(launch(env, "sweep", "--config", "configs/demo.py", "--workdir", wd, *SMOKE,
                  f"--config.data.data_dir={data_dir}", "--config.model.backbone=tiny",
                  "--config.sweep.trainer=cached_heads", "--config.sweep.grid=((\"data.blur\", (0, 3)),)"))
    return wd, p


def test_prepare_builds_the_tfds_dataset(data_dir):
    from cervix_jax.data import builders
    source, _ = builders.load_source({"name": "synthetic_cervix/tiny", "data_dir": str(data_dir)})
    assert len(source) == 48
    assert source[0]["image"].shape == (128, 192, 3) and source[0]["image"].dtype == np.uint8


def test_patch_demo_trains_evaluates_explains_and_ends_with_a_table(patch_run, data_dir):
    wd, p = patch_run
    # the short table, not a JSON blob
    assert "test AUC" in p.stdout and "patch 8 (dysplasia)" in p.stdout and '"train": {' not in p.stdout
    summary = strict_json(wd / "train_summary.json")
    assert summary["status"] == "finished" and summary["step"] == summary["total_steps"] > 0
    m = strict_json(wd / "eval" / "metrics.json")
    scores = read_scores(wd / "eval" / "scores_test.csv")
    assert m["test"]["n"] == len(scores) > 0
    # labels are the examples' dysplasia labels (config.data.label), read independently from the build
    from cervix_jax.data import builders
    source, _ = builders.load_source({"name": "synthetic_cervix/tiny", "data_dir": str(data_dir)})
    by_id = {int(source[i]["id"]): int(source[i]["dysplasia"]) for i in range(len(source))}
    assert all(by_id[i] == label for i, (label, _) in scores.items())
    labels = np.array([v[0] for v in scores.values()])
    values = np.array([v[1] for v in scores.values()])
    if len(set(labels)) == 2:
        from sklearn.metrics import roc_auc_score
        np.testing.assert_allclose(m["test"]["at_0.5"]["auc"], roc_auc_score(labels, values), rtol=1e-6)
    else:   # one class: no AUC, written as JSON null (never a NaN token)
        assert m["test"]["at_0.5"]["auc"] is None
    index = strict_json(wd / "explain" / "test" / "index.json")
    assert len(index["items"]) == 4 and set(index["methods"]) == {"crm", "weights"}
    for item in index["items"]:
        assert item["pred"] in (0, 1) and item["correct"] == (item["pred"] == item["label"])
        for rel in [item["image"], *item["maps"].values()]:
            assert (wd / "explain" / "test" / rel).read_bytes()[:4] == b"\x89PNG"
    assert (wd / "regulator_evolution.png").read_bytes()[:4] == b"\x89PNG"


def test_patch_demo_measures_weights_on_the_cervix_and_the_regulator(patch_run, data_dir):
    """eval/patch_weights.json against NumPy on the run's own images: the cervix's area share, the weight
    mass on it from the best checkpoint's weights, the start error from the grid centre; the table's line."""
    import ml_collections as mlc

    from cervix_jax.train import rundir
    from cervix_jax.train.checkpoint import restore
    from cervix_jax.train.data import local_data
    wd, p = patch_run
    s = strict_json(wd / "eval" / "patch_weights.json")
    per = s["per_image"]
    config = mlc.ConfigDict(rundir.read_config(wd))
    data = local_data(config)
    test, train = data.examples("test", 10 ** 9), data.examples("train", 10 ** 9)
    assert s["n_test"] == len(test) == len(read_scores(wd / "eval" / "scores_test.csv"))
    assert s["n_train"] == len(train) and s["regulator"] == "iterative"
    patch = config.model.patch_size
    masks = np.stack([e["cervix_mask"] > 0 for e in test]).astype(np.float64)
    n, h, w = masks.shape
    share = masks.reshape(n, h // patch, patch, w // patch, patch).mean((2, 4))
    np.testing.assert_allclose(per["area_share"], masks.mean((1, 2)), rtol=1e-9)
    run = restore(config, wd, data, which="best")
    a = np.asarray(run.task.forward(run.state.params, np.stack([e["image"] for e in test]))[1], np.float64)
    np.testing.assert_allclose(per["mass_cervix"], (a * share).sum((1, 2)) / a.sum((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(s["mass_cervix"], np.mean(per["mass_cervix"]), rtol=1e-9)
    np.testing.assert_allclose(s["mass_over_area"], s["mass_cervix"] / s["area_share"], rtol=1e-9)
    gh, gw = h // patch, w // patch
    start = np.array([(gw - 1) / 2, (gh - 1) / 2])
    for e, err in zip(train, per["init_err"]):
        ys, xs = np.nonzero(e["cervix_mask"])
        c = np.array([(xs.mean() + 0.5) / patch - 0.5, (ys.mean() + 0.5) / patch - 0.5])
        np.testing.assert_allclose(err, np.linalg.norm(start - c), rtol=1e-5)
    # the end error is within the distance moved of the start error (triangle inequality)
    assert np.all(np.abs(np.subtract(per["reg_err"], per["init_err"])) <= np.add(per["reg_moved"], 1e-5))
    assert f"weight mass on the cervix {s['mass_cervix']:.3f}" in p.stdout


def test_eval_on_a_finished_run_with_test_blur_writes_elsewhere(patch_run, data_dir, env, tmp_path):
    wd, _ = patch_run
    root = snapshot(wd)
    ok(launch(env, "eval", "--config", "configs/demo.py:patch", "--workdir", wd, *SMOKE,
              f"--config.data.data_dir={data_dir}", "--config.model.mlp_hidden=(8,)", "--config.data.blur=3",
              "--out", tmp_path / "blurred"))
    assert snapshot(wd) == root                                     # the run's root is untouched
    assert strict_json(tmp_path / "blurred" / "metrics.json")["blur"] == 3
    # blur reaches the test images only: val scores equal, test scores differ
    assert read_scores(tmp_path / "blurred" / "scores_val.csv") == read_scores(wd / "eval" / "scores_val.csv")
    clean = read_scores(wd / "eval" / "scores_test.csv")
    blurred = read_scores(tmp_path / "blurred" / "scores_test.csv")
    assert clean.keys() == blurred.keys()
    assert any(clean[i][1] != blurred[i][1] for i in clean)


def test_train_refuses_a_changed_config_and_a_held_workdir(patch_run, data_dir, env):
    from cervix_jax.train.lock import workdir_lock
    wd, _ = patch_run
    base = ["--config", "configs/demo.py:patch", "--workdir", wd, *SMOKE,
            f"--config.data.data_dir={data_dir}", "--config.model.mlp_hidden=(8,)"]
    saved = (wd / "config.json").read_bytes()
    p = launch(env, "train", *base, "--config.seed=5", "--config.train.lr=0.5")
    assert p.returncode == 2, p.stderr[-3000:]
    for part in ("seed: 0 -> 5", "train.lr: 0.001 -> 0.5", "--force_new_config"):
        assert part in p.stderr, p.stderr[-3000:]
    assert (wd / "config.json").read_bytes() == saved
    with workdir_lock(wd, "sweep"):
        p = launch(env, "train", *base)
    assert p.returncode == 2, p.stderr[-3000:]
    assert f"is in use by `sweep` (pid {os.getpid()} on host {socket.gethostname()}" in p.stderr


def test_sweep_fast_path_blurs_only_test_images(sweep_run):
    wd, _ = sweep_run
    points = {b: wd / "points" / f"data.blur={b}" for b in (0, 3)}
    for pdir in points.values():
        assert strict_json(pdir / "train_summary.json")["fast_path"] is True
        assert (pdir / "head.npz").exists() and not (pdir / "checkpoints").exists()
    val = [read_scores(points[b] / "eval" / "scores_val.csv") for b in (0, 3)]
    test = [read_scores(points[b] / "eval" / "scores_test.csv") for b in (0, 3)]
    assert val[0] == val[1]
    assert test[0].keys() == test[1].keys() and any(test[0][i][1] != test[1][i][1] for i in test[0])
    assert strict_json(points[3] / "eval" / "metrics.json")["blur"] == 3
    assert (wd / "summary.md").exists()


def test_eval_and_explain_on_a_sweep_point(sweep_run, data_dir, env, tmp_path):
    wd, _ = sweep_run
    pdir = wd / "points" / "data.blur=3"
    before = snapshot(pdir, recursive=True)
    base = ["--config", "configs/demo.py", "--workdir", pdir, *SMOKE, f"--config.data.data_dir={data_dir}",
            "--config.model.backbone=tiny", "--config.sweep.trainer=cached_heads", "--config.data.blur=3"]
    p = launch(env, "explain", *base)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "--out DIR" in p.stderr and "launch.py train" not in p.stderr, p.stderr[-3000:]
    ok(launch(env, "eval", *base, "--out", tmp_path / "eval"))
    assert snapshot(pdir, recursive=True) == before                    # the point is never written
    mine, fast = strict_json(tmp_path / "eval" / "metrics.json"), strict_json(pdir / "eval" / "metrics.json")
    assert mine["checkpoint_step"] == fast["checkpoint_step"]
    ours = read_scores(tmp_path / "eval" / "scores_test.csv")
    theirs = read_scores(pdir / "eval" / "scores_test.csv")
    assert ours.keys() == theirs.keys()
    np.testing.assert_allclose([ours[i][1] for i in ours], [theirs[i][1] for i in ours], atol=1e-5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_review_serves_the_explain_output_and_is_one_per_workdir(patch_run, env):
    wd, _ = patch_run
    port = _free_port()
    cmd = [sys.executable, "launch.py", "review", "--workdir", str(wd), "--port", str(port)]
    # Started as a script's background job is: with SIGINT ignored (the server must still stop on it).
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while True:
            try:
                page = urllib.request.urlopen(url + "/", timeout=5).read().decode()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, server.communicate()[1][-3000:]
                time.sleep(0.3)
        assert "<html" in page.lower()
        items = json.loads(urllib.request.urlopen(url + "/api/items?reviewer=ci&all=1", timeout=10).read())
        assert len(items["items"]) == 4
        second = launch(env, "review", "--workdir", wd, "--port", _free_port(), timeout=120)
        assert second.returncode == 2 and "is in use by `review`" in second.stderr, second.stderr[-2000:]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert server.returncode == 0, server.returncode
    assert not (wd / "review" / ".lock").exists()
    p = ok(launch(env, "review-summary", "--workdir", wd, timeout=120))
    assert (wd / "review" / "summary.md").exists() and "summary" in p.stdout


def test_report_rewrites_the_sweep_reports_and_nothing_else(sweep_run, data_dir, env):
    wd, _ = sweep_run
    summary = (wd / "summary.md").read_text()
    (wd / "summary.md").unlink()
    config = (wd / "config.json").read_bytes()
    ok(launch(env, "report", "--config", "configs/demo.py", "--workdir", wd, *SMOKE,
              f"--config.data.data_dir={data_dir}", "--config.model.backbone=tiny",
              "--config.sweep.trainer=cached_heads", "--config.sweep.grid=((\"data.blur\", (0, 3)),)"))
    assert (wd / "summary.md").read_text() == summary and (wd / "config.json").read_bytes() == config
