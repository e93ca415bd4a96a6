"""Paper A's regulator evidence end to end through the command line, at smoke size: `launch.py sweep
--config configs/patch.py:evidence` trains every point with the loop trainer, evaluates it and then
runs its reports (`summary`, `regulator_evidence`), which explain each point's test split into the
point as the sweep's owner; `launch.py report` reruns the report on the finished workdir. The
report's per-mode classification columns are checked against each point's own eval/metrics.json and
its map columns against the points' explain/test/index.json (independent reads of the files)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow   # two launch.py processes; 6 tiny points
def test_evidence_sweep_and_report_through_launch(tmp_path, rng):
    seeds = sorted(int(s) for s in rng.choice(1 << 20, size=2, replace=False))   # the two runs per mode
    work = tmp_path / "evidence"
    args = ["--config", "configs/patch.py:evidence", "--workdir", str(work),
            "--config.data.name=synthetic_cervix/tiny", f"--config.data.data_dir={tmp_path / 'tfds'}",
            "--config.data.image_size=48", "--config.data.pad_to=(32,48)", "--config.train.epochs=1",
            "--config.train.batch_size=8", "--config.model.mlp_hidden=(8,)",
            "--config.model.weight_hidden=(8,)",
            '--config.sweep.grid=(("model.regulator", ("none", "fixed", "iterative")), '
            f'("seed", {tuple(seeds)}))']

    def launch(*mode_args):
        p = subprocess.run([sys.executable, "launch.py", *mode_args, *args], cwd=ROOT, capture_output=True,
                           text=True, timeout=900)
        assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
        return p

    launch("sweep")
    report = json.loads((work / "regulator_evidence.json").read_text())
    assert (work / "regulator_evidence.md").exists() and (work / "summary.md").exists()
    points = sorted((work / "points").iterdir())
    assert len(points) == 6
    for mode in ("none", "fixed", "iterative"):
        dirs = [work / "points" / f"model.regulator={mode}__seed={s}" for s in seeds]
        aucs = [json.loads((d / "eval" / "metrics.json").read_text())["test"]["at_val_threshold"]["auc"]
                for d in dirs]
        np.testing.assert_allclose(report["table"][mode]["auc"], aucs, rtol=1e-12)
        pg = []
        for d in dirs:
            items = json.loads((d / "explain" / "test" / "index.json").read_text())["items"]
            pg.append(np.nanmean([np.nan if it["metrics"]["weights"]["pointing_game_cervix"] is None
                                  else it["metrics"]["weights"]["pointing_game_cervix"] for it in items]))
        np.testing.assert_allclose(report["table"][mode]["pointing_game_cervix"], pg, rtol=1e-12)
    # the ablation report reads the same points (explained above): one record per point, arms named
    # "<regulator>/<reduction>", AUC from each point's own metrics, groups from the data
    from cervix_jax.reports import regulator_ablation
    records = regulator_ablation.measure(work, explain=False)
    assert sorted((r["arm"], r["seed"]) for r in records) == sorted(
        (f"{m}/mean", s) for m in ("none", "fixed", "iterative") for s in seeds)
    for r in records:
        m = json.loads((Path(r["dir"]) / "eval" / "metrics.json").read_text())["test"]["at_val_threshold"]
        assert r["auc"] == m["auc"] and len(r["test_groups"]) == len(r["test_ids"]) == len(r["iou_excess"])
    result = regulator_ablation.write_tables(records, tmp_path / "ablation", n_boot=200)
    assert {(d["a"], d["b"]) for d in result["differences"]} == {
        ("iterative/mean", "none/mean"), ("iterative/mean", "fixed/mean"), ("fixed/mean", "none/mean")}
    before = (work / "regulator_evidence.json").read_text()
    launch("report")                      # reads the explained points again; same tables
    assert json.loads((work / "regulator_evidence.json").read_text())["table"] == json.loads(before)["table"]
