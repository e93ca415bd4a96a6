"""Paper B's sweep fast path end to end (`sweep` -> `cached_heads.train_points`, then the reports).

Tiny backbone on in-memory images, 2 heads x 2 seeds x 1 blur level:
- the fast path gives the same per-point results as the ordinary path (what `config.sweep.trainer=loop`
  runs: one `train` + `evaluate` per point; on 2 of the 4 points, both heads and both seeds): kept
  step, val-chosen threshold, val and test scores;
- every test (and val) image is scored exactly once, and the threshold is the one chosen on the
  written validation scores;
- the summary and the paper table equal metrics recomputed from the written per-point scores with
  scikit-learn (the table's bootstrap intervals are recomputed by an independent group resample).
"""
import csv
import json
import pathlib
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from cervix_jax import metrics as M
from cervix_jax import reports
from cervix_jax.data import memory
from cervix_jax.data.split import group_split
from cervix_jax.models import pyramid
from cervix_jax.train import cached_heads, rundir
from cervix_jax.train.scoring import eval_result
from cervix_jax.train.evaluate import evaluate
from cervix_jax.train.loop import train
from cervix_jax.train.sweep import grid_points, point_config, point_name, sweep

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "configs"))
import pyramid as pyramid_config  # noqa: E402  (configs/pyramid.py)

N = 48


def tiny_sweep_config(fast: bool):
    c = pyramid_config.get_config("p3,runlocal")
    c.data.name = f"memory/{N}"
    c.data.pad_to = (64, 96)
    c.train.epochs = 3
    c.train.batch_size = 8
    c.train.lr = 3e-2
    c.train.checkpoint_every = 1000
    c.sweep.grid = (("model.levels", ("p3", "p3p6p7")), ("seed", (0, 1)), ("data.blur", (0,)))
    c.sweep.trainer = "cached_heads" if fast else "loop"
    return c


# The ordinary path (one `train` + `evaluate` per point, as `config.sweep.trainer=loop` runs them) on
# two of the four points: both heads, both seeds.
ORDINARY = ({"model.levels": "p3", "seed": 1, "data.blur": 0},
            {"model.levels": "p3p6p7", "seed": 0, "data.blur": 0})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    fast_dir = tmp_path_factory.mktemp("fast")
    result = sweep(tiny_sweep_config(True), fast_dir)
    assert result["status"] == "finished"
    assert reports.write(tiny_sweep_config(True), fast_dir)["paper_b_table"]["rows"] == 2
    ordinary_dir = tmp_path_factory.mktemp("ordinary")
    c = tiny_sweep_config(False)
    returned = {}   # what the loop's train and evaluate returned, per point
    for p in ORDINARY:
        pdir = ordinary_dir / "points" / point_name(p)
        summary = train(point_config(c, p), pdir)
        assert summary["status"] == "finished"
        returned[point_name(p)] = (summary, evaluate(point_config(c, p), pdir))
    return {True: fast_dir, False: ordinary_dir, "returned": returned}


def _point(workdir, p):
    d = workdir / "points" / point_name(p)
    return (json.loads((d / "eval" / "metrics.json").read_text()),
            rundir.read_scores(d, "val"), rundir.read_scores(d, "test"), d)


def test_fast_path_equals_ordinary_runs(runs):
    for p in ORDINARY:
        fm, fval, ftest, fdir = _point(runs[True], p)
        om, oval, otest, _ = _point(runs[False], p)
        assert fm["fast_path"] and "fast_path" not in om
        assert json.loads((fdir / "train_summary.json").read_text())["fast_path"]
        assert fm["checkpoint_step"] == om["checkpoint_step"], p
        for f, o in ((fval, oval), (ftest, otest)):
            np.testing.assert_array_equal(f["id"], o["id"])
            np.testing.assert_array_equal(f["label"], o["label"])
            np.testing.assert_allclose(f["score"], o["score"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(fm["thresholds"]["val_chosen"], om["thresholds"]["val_chosen"],
                                   rtol=1e-4, atol=1e-5)
        for split in ("val", "test"):
            for k in ("accuracy", "f1", "auc"):
                np.testing.assert_allclose(fm[split]["at_val_threshold"][k], om[split]["at_val_threshold"][k],
                                           atol=1e-9, err_msg=f"{p} {split} {k}")
        # the fast path really trained (not the init head): val scores moved between epochs
        rows = [json.loads(r) for r in (fdir / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows if r["split"] == "val"] == [0, 1, 2]


def test_scored_once_thresholds_from_val_and_tables(runs):
    c = tiny_sweep_config(True)
    workdir = runs[True]
    arrays = memory.memory_examples(N, tuple(c.data.pad_to))
    parts = group_split(arrays["label"], arrays["group"], test_fraction=c.data.test_fraction,
                        val_fraction=c.data.val_fraction, seed=c.data.split_seed)
    per_head = {}
    for p in grid_points(c):
        m, val, test, _ = _point(workdir, p)
        # every test / val image exactly once, and only those
        np.testing.assert_array_equal(test["id"], np.sort(arrays["id"][parts["test"]]))
        np.testing.assert_array_equal(val["id"], np.sort(arrays["id"][parts["val"]]))
        np.testing.assert_array_equal(test["label"], arrays["label"][test["id"]])
        # the threshold is the one chosen on the written val scores
        t = M.choose_threshold(val["score"], val["label"])
        assert m["thresholds"]["val_chosen"] == t
        pred = (test["score"] >= t).astype(int)
        ref = {"accuracy": accuracy_score(test["label"], pred), "f1": f1_score(test["label"], pred),
               "auc": roc_auc_score(test["label"], test["score"])}
        for k, v in ref.items():
            np.testing.assert_allclose(m["test"]["at_val_threshold"][k], v, rtol=1e-12, atol=1e-12)
        per_head.setdefault(p["model.levels"], []).append((ref, test, t))

    summary = {r["model.levels"]: r for r in csv.DictReader((workdir / "summary.csv").open())}
    table = {r["levels"]: r for r in csv.DictReader((workdir / "paper_table.csv").open())}
    assert set(table) == {"P3", "P3,P6,P7"}
    group_of = dict(zip(arrays["id"].tolist(), arrays["group"].tolist()))
    for head, items in per_head.items():
        row = table[",".join(pyramid.parse_levels(head))]
        assert row["blur"] == "0" and row["n_seeds"] == "2" and int(row["n_test"]) == len(parts["test"])
        for k in ("accuracy", "f1", "auc"):
            vals = [ref[k] for ref, _, _ in items]
            np.testing.assert_allclose(float(row[k]), np.mean(vals), rtol=1e-12)
            np.testing.assert_allclose(float(row[k + "_sd"]), np.std(vals, ddof=1), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(float(summary[head][k]), np.mean(vals), rtol=1e-12)
        # the headline interval: a group resample of the seed-mean accuracy, recomputed independently
        test = items[0][1]
        hits = np.mean([(tst["score"] >= t).astype(int) == tst["label"] for _, tst, t in items], axis=0)
        groups = np.array([group_of[int(i)] for i in test["id"]])
        uniq = np.unique(groups)
        rng = np.random.default_rng(0)
        boot = []
        for _ in range(1000):
            pick = rng.integers(0, len(uniq), len(uniq))
            boot.append(np.concatenate([hits[groups == uniq[g]] for g in pick]).mean())
        low, high = np.quantile(boot, [0.025, 0.975])
        assert float(row["accuracy_ci_low"]) <= float(row["accuracy"]) <= float(row["accuracy_ci_high"])
        np.testing.assert_allclose([float(row["accuracy_ci_low"]), float(row["accuracy_ci_high"])],
                                   [low, high], atol=0.08)
    # paired difference: reference head minus the other, paired per seed
    ref_items, other_items = per_head["p3p6p7"], per_head["p3"]
    diff = np.mean([a["accuracy"] - b["accuracy"] for (a, _, _), (b, _, _) in zip(ref_items, other_items)])
    np.testing.assert_allclose(float(table["P3"]["diff_ref_minus_head"]), diff, atol=1e-12)
    assert float(table["P3"]["diff_low"]) <= diff + 1e-12 <= float(table["P3"]["diff_high"]) + 2e-12
    md = (workdir / "paper_table.md").read_text()
    assert "| P3+P6+P7 |" in md and "95% CI" in md and "±" in md


def test_fast_path_declines_other_grid_keys(tmp_path, capsys):
    c = tiny_sweep_config(True)
    points = [{"model.levels": "p3", "train.lr": 0.1}]
    assert cached_heads.train_points(c, points, tmp_path) == points
    assert "cached-feature trainer off" in capsys.readouterr().out
    assert not (tmp_path / "points").exists()


def test_both_trainers_read_back_through_rundir(runs):
    """Each workdir file has one writer and reader (rundir): what the trainers computed reads back."""
    from test_rundir import events
    for p in ORDINARY:
        summary, result = runs["returned"][point_name(p)]
        ordinary = runs[False] / "points" / point_name(p)
        assert rundir.read_train_summary(ordinary) == summary and rundir.read_eval(ordinary) == result
        fast = runs[True] / "points" / point_name(p)
        for workdir in (fast, ordinary):
            stored = rundir.read_eval(workdir)
            scored = {s: rundir.read_scores(workdir, s) for s in ("val", "test")}
            extra = {"fast_path": True} if workdir == fast else {}
            # the metrics of the scores read back are the stored ones, exactly
            assert eval_result(scored, step=stored["checkpoint_step"], blur=stored["blur"], **extra) == stored
            run = rundir.read_train_summary(workdir)
            assert run["best_step"] == stored["checkpoint_step"]
            val = [r for r in rundir.read_metrics(workdir) if r["split"] == "val"]
            spe = run["total_steps"] // 3
            assert [r["step"] for r in val] == [spe, 2 * spe, 3 * spe]
            best = max(r["val_auc"] for r in val)
            assert run["best_value"] == best and run["best_step"] == next(r["step"] for r in val
                                                                          if r["val_auc"] == best)
            tb = events(workdir)["val/val_auc"]
            assert [s for s, _ in tb] == [r["step"] for r in val]
            np.testing.assert_allclose([v for _, v in tb], [r["val_auc"] for r in val], rtol=1e-6)
        written = point_config(tiny_sweep_config(True), p).to_json_best_effort()
        assert rundir.read_config(fast) == json.loads(written)
        head = rundir.read_head(fast)
        assert head["step"] == rundir.read_eval(fast)["checkpoint_step"]
        assert head["levels"] == pyramid.parse_levels(p["model.levels"])


def test_maps_report_equals_the_explainer_on_the_full_model(runs, tmp_path):
    """paper_b_maps (every head's maps from one cached backbone pass) against `explain_split` on the
    point (the backbone run inside every map, `launch.py explain`'s code): same per-image ROI area,
    pointing game and IoU for CAM, CRM in Eq. (1) space and softmax CRM; one grid per head."""
    from cervix_jax.review.server import read_index
    from cervix_jax.train.evaluate import explain_split
    c = tiny_sweep_config(True)
    fast = runs[True]
    with open(fast / "maps" / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"cam", "crm_linear", "crm"} and {r["seed"] for r in rows} == {"0"}
    assert (fast / "maps" / "blur=0" / "P3.png").exists()
    assert (fast / "maps" / "blur=0" / "P3_P6_P7.png").exists()
    p = {"model.levels": "p3p6p7", "seed": 0, "data.blur": 0}
    pconfig = point_config(c, p)
    pconfig.explain.max_images = 1000
    out = explain_split(pconfig, fast / "points" / point_name(p), out_dir=tmp_path / "explain")
    index = read_index(str(out))
    mine = {(r["method"], int(r["id"])): r for r in rows if r["levels"].lower() == "p3,p6,p7"}
    assert len(index["items"]) == len(mine) // 3 > 0
    for item in index["items"]:
        for method in ("cam", "crm_linear", "crm"):
            r = mine[(method, item["id"])]
            assert int(r["pred"]) == item["pred"]
            assert float(r["score"]) == pytest.approx(item["score"], abs=1e-5)
            for k in ("roi_area", "pointing_game_lesion", "iou_lesion"):
                ref = item["metrics"][method][k]
                got = float(r[k])
                if ref is None:
                    assert np.isnan(got), (method, k)
                else:
                    assert got == pytest.approx(ref, abs=2e-3), (method, k, item["id"])
