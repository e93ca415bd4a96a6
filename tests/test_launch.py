"""launch.py: config errors name every bad key/value at once; `demo` (prepare + train + eval +
explain) runs end to end with the tiny config and writes the documented workdir layout."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def launch(*args, timeout=300):
    return subprocess.run([sys.executable, "launch.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_unknown_keys_and_bad_values_are_all_reported(tmp_path):
    p = launch("train", "--config", "configs/tiny.py", "--workdir", tmp_path, "--config.train.nope=1",
               "--config.train.epochs=abc", "--config.modl.width=3", "--config.parallel.distributed=maybe")
    assert p.returncode != 0
    for part in ("'train.nope'", "--config.train.epochs='abc': expected int", "'modl'",
                 "--config.parallel.distributed='maybe': expected bool"):
        assert part in p.stderr, p.stderr
    assert not (tmp_path / "config.json").exists()


def test_demo_with_tiny_config_writes_the_workdir(tmp_path, rng):
    epochs = int(rng.integers(1, 3))
    p = launch("demo", "--config", "configs/tiny.py:state", "--workdir", tmp_path,
               f"--config.train.epochs={epochs}", "--config.explain.max_images=4")
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["train"]["epochs"] == epochs and cfg["model"]["example_state"] is True
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == summary["total_steps"]
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # every test image scored exactly once, in the csv and in the confusion matrix
    rows = (tmp_path / "eval" / "scores_test.csv").read_text().splitlines()[1:]
    ids = [int(r.split(",")[0]) for r in rows]
    assert len(ids) == len(set(ids)) == m["test"]["n"] == np.sum(m["test"]["at_0.5"]["confusion"])
    scores = np.array([float(r.split(",")[2]) for r in rows])
    labels = np.array([int(r.split(",")[1]) for r in rows])
    from sklearn.metrics import roc_auc_score
    if len(set(labels)) == 2:
        np.testing.assert_allclose(m["test"]["at_0.5"]["auc"], roc_auc_score(labels, scores), rtol=1e-9)
    for f in ("roc.png", "scores.png", "curves.png"):
        assert (tmp_path / "eval" / f).read_bytes()[:4] == b"\x89PNG"
    index = json.loads((tmp_path / "explain" / "test" / "index.json").read_text())
    assert len(index["items"]) == 4
    lines = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"train", "val"} <= {r["split"] for r in lines}
