"""Paper A's Table 1 / Fig. 4 report on fabricated sweep directories, against NumPy and scikit-learn."""
import json
import shutil

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.neighbors import KNeighborsClassifier

from cervix_jax.reports import paper_a

KEYS = paper_a.METRICS + ("balanced_accuracy",)


def _point(root, name, model, rng, val_auc):
    d = root / "points" / name
    (d / "eval").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"model": model, "seed": 0}))
    m = {k: float(rng.uniform(0.5, 1)) for k in KEYS}
    (d / "eval" / "metrics.json").write_text(json.dumps(
        {"val": {"at_0.5": {"auc": val_auc}}, "test": {"at_0.5": m, "at_val_threshold": m}}))
    for split in ("val", "test"):
        y = rng.integers(0, 2, 30)
        y[:2] = (0, 1)
        s = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.3, 30), 0, 1)
        (d / "eval" / f"scores_{split}.csv").write_text(
            "id,label,score\n" + "".join(f"{i},{a},{b:.8g}\n" for i, (a, b) in enumerate(zip(y, s))))
    return m


def test_table1_chooses_k_on_validation_and_averages_runs(tmp_path, rng):
    free, crop = tmp_path / "free", tmp_path / "crop"
    base = {"name": "baseline", "arch": "vgg16", "crop": "none", "freeze_blocks": 0}
    free_m = [_point(free, f"seed={s}", base, rng, 0.7) for s in range(3)]
    patch_m = [_point(free, f"patch{s}", {"name": "patch", "regulator": "iterative",
                                                         "spatial_reduction": "sum"}, rng, 0.8)
               for s in range(2)]
    val_auc = {48: 0.6, 64: 0.9, 80: 0.7}
    crop_m = {k: [_point(crop, f"k={k}__seed={s}", dict(base, crop="center", crop_size=k), rng, v + 0.01 * s)
                  for s in range(2)] for k, v in val_auc.items()}
    result = paper_a.write_many(tmp_path / "out", [free, crop])
    rows = {r["approach"]: r for r in result["rows"]}
    crop_name = "Crop-k VGG16 (k=64, chosen on val)"
    patch_name = "Patch model (iterative regulator, Eqn. 5 sum)"
    assert set(rows) == {"VGG16", patch_name, crop_name}
    for name, ms, annotation in (("VGG16", free_m, "no"), (crop_name, crop_m[64], "yes"),
                                 (patch_name, patch_m, "no")):
        r = rows[name]
        assert r["annotation"] == annotation and r["runs"] == len(ms)
        for k in paper_a.METRICS:
            v = np.array([m[k] for m in ms])
            np.testing.assert_allclose([r[k], r[k + "_sd"]], [v.mean(), v.std(ddof=1)], rtol=1e-12)
        assert r["auc_lo"] <= r["auc"] <= r["auc_hi"]
    norm = paper_a.normalised_metrics(result["rows"])
    for k in paper_a.METRICS:
        best = max(x[k] for x in result["rows"])
        np.testing.assert_allclose(norm[k], [r[k] / best for r in result["rows"]])
    for f in ("table1.md", "table1.csv", "fig4a_metrics.png", "fig4b_roc.png", "fig4c_scores.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    with pytest.raises(FileNotFoundError, match="no finished sweep point"):
        paper_a.collect([tmp_path / "empty"])


def test_mean_roc_is_the_vertical_average_of_sklearn_curves(rng):
    runs, grid = [], np.linspace(0, 1, 11)
    ref = []
    for _ in range(3):
        y = rng.integers(0, 2, 40)
        y[:2] = (0, 1)
        s = rng.uniform(size=40) + 0.3 * y
        runs.append({"scores": {"test": {"score": s, "label": y}}})
        fpr, tpr, _ = skm.roc_curve(y, s)
        ref.append(np.interp(grid, fpr, tpr))
    fpr, tpr = paper_a.mean_roc(runs, grid)
    np.testing.assert_allclose(tpr, np.mean(ref, 0), atol=1e-12)


def test_run_bootstrap_interval_covers_the_mean(rng):
    v = rng.normal(0.8, 0.05, 6)
    lo, hi = paper_a.run_bootstrap_interval(v, rng=rng)
    assert lo < v.mean() < hi and hi - lo < 4 * v.std(ddof=1)
    assert np.isnan(paper_a.run_bootstrap_interval([0.5], rng=rng)[0])


def test_tsne_keeps_separated_classes_apart(rng):
    y = np.repeat([0, 1], 20)
    x = rng.normal(size=(40, 12)) + 6.0 * y[:, None]
    e = paper_a.tsne_embedding(x, seed=int(rng.integers(1000)))
    assert e.shape == (40, 2)
    acc = KNeighborsClassifier(3).fit(e, y).score(e, y)
    assert acc == 1.0


def test_hierarchical_bootstrap_carries_run_to_run_variance(rng):
    from cervix_jax import metrics as M
    shifts = np.array([-0.3, 0.0, 0.3, -0.2, 0.25])           # runs disagree; women within a run agree
    diffs, groups = [], []
    for s in shifts:
        n = int(rng.integers(30, 50))
        diffs.append(s + rng.normal(0, 0.01, n))
        groups.append(rng.integers(0, n // 3, n))
    out = M.hierarchical_bootstrap_diff(diffs, groups, n_boot=500, seed=int(rng.integers(1000)))
    np.testing.assert_allclose(out["estimate"], np.mean([d.mean() for d in diffs]), rtol=1e-12)
    np.testing.assert_allclose(out["per_run"], [d.mean() for d in diffs], rtol=1e-12)
    assert out["low"] < 0 < out["high"] and out["high"] - out["low"] > 0.2
    # pooling the runs' images as if one run (what a per-image bootstrap does) gives a narrow interval
    n = sum(map(len, diffs))
    pooled = M.paired_bootstrap_diff(lambda s, y: s.mean(), np.concatenate(diffs), np.zeros(n),
                                     np.zeros(n, int),
                                     np.concatenate([g + 1000 * i for i, g in enumerate(groups)]), n_boot=300)
    assert pooled["high"] - pooled["low"] < 0.5 * (out["high"] - out["low"])
    const = M.hierarchical_bootstrap_diff([np.full(5, 0.2)], [np.arange(5)], n_boot=50)
    assert const["low"] == pytest.approx(0.2) and const["high"] == pytest.approx(0.2)


def test_area_matched_centre_region(rng):
    h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
    frac = float(rng.uniform(0.05, 0.6))
    region = paper_a.area_matched_centre_region(frac, (h, w))
    assert region.sum() == round(frac * h * w)
    ys, xs = np.nonzero(region)                        # centred
    assert abs(xs.mean() - (w - 1) / 2) < 1.0 and abs(ys.mean() - (h - 1) / 2) < 1.0
    assert paper_a.iou(region, region) == 1.0
    other = np.zeros((h, w), bool)
    other[:2, :2] = True
    assert paper_a.iou(region, other) == 0.0 or frac > 0.5
    half = np.zeros((h, w), bool)
    half[:, : w // 2] = True                           # an ellipse split by the vertical midline
    np.testing.assert_allclose(paper_a.iou(region & half, region), (region & half).sum() / region.sum())


def test_zipped_sweep_key_sets_both_keys():
    from cervix_jax.train.config import base_config
    from cervix_jax.train.sweep import grid_points, point_config
    c = base_config("tiny")
    c.sweep.grid = (("model.width", (4, 8)), ("seed+data.split_seed", (3, 5)))
    points = grid_points(c)
    assert len(points) == 4
    pc = point_config(c, points[1])
    assert (pc.model.width, pc.seed, pc.data.split_seed) == (4, 5, 5)
    c.sweep.grid = (("seed+data.nope", (1,)),)
    with pytest.raises(KeyError, match="data.nope"):
        point_config(c, grid_points(c)[0])


def test_fig4ef_probability_by_grade_and_visit(tmp_path, rng):
    n = 40
    scores = {"id": rng.permutation(100)[:n], "score": rng.uniform(0, 1, n)}
    grade = {int(i): int(rng.integers(0, 5)) for i in range(100)}
    groups = paper_a.probability_by(scores, grade)
    g = np.array([grade[int(i)] for i in scores["id"]])
    assert list(groups) == sorted(set(g.tolist()))
    for v, s in groups.items():                       # reference: a plain loop over the images
        np.testing.assert_array_equal(s, [x for x, gv in zip(scores["score"], g) if gv == v])
    with pytest.raises(KeyError, match="no value"):
        paper_a.probability_by({"id": np.array([100]), "score": np.array([0.5])}, grade)

    # The figures of fabricated points; grade and visit come from the lookup (one call per data config).
    root = tmp_path / "sweep"
    patch = {"name": "patch", "regulator": "iterative", "spatial_reduction": "sum"}
    for s in range(2):
        _point(root, f"seed={s}", patch, rng, 0.8)
        cfg = root / "points" / f"seed={s}" / "config.json"
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "data": {"name": "synthetic_cervix/x"}}))
    calls = []

    def by_three(config):
        return {i: i // 3 for i in range(30)}

    def lookup(config):
        calls.append(config["data"]["name"])
        return {"cin_grade": {i: i % 5 for i in range(30)}, "visit": {i: i % 3 for i in range(30)}}

    result = paper_a.write_many(tmp_path / "out", [root], lookup=lookup, group_lookup=by_three)
    assert calls == ["synthetic_cervix/x"] and result["notes"] == []
    for f in ("fig4e_grade.png", "fig4f_visit.png"):
        assert f in result["written"] and (tmp_path / "out" / f).stat().st_size > 0

    def no_keys(config):
        raise KeyError("examples have no 'cin_grade'")

    result = paper_a.write_many(tmp_path / "out2", [root], lookup=no_keys, group_lookup=by_three)
    assert "fig4e_grade.png" not in result["written"] and "cin_grade" in result["notes"][0]


def test_table1_auc_interval_resamples_runs_and_women(tmp_path, rng):
    """The runs x women column: hierarchical_bootstrap_ci on each run's test scores grouped by woman,
    the group lookup called once per distinct data config; left out (nan, a note) without data."""
    from cervix_jax import metrics as M
    base = {"name": "baseline", "arch": "lenet", "crop": "none", "freeze_blocks": 0}
    for s in range(3):
        _point(tmp_path / "sw", f"seed={s}", base, rng, 0.7)
        cfg = json.loads((tmp_path / "sw" / "points" / f"seed={s}" / "config.json").read_text())
        cfg["data"] = {"name": "synthetic_cervix/evidence", "split_seed": s % 2}
        (tmp_path / "sw" / "points" / f"seed={s}" / "config.json").write_text(json.dumps(cfg))
    calls = []

    def lookup(config):
        calls.append(config["data"]["split_seed"])
        return {i: i // 3 for i in range(30)}

    result = paper_a.write_many(tmp_path / "out", [tmp_path / "sw"], group_lookup=lookup,
                                lookup=lambda c: {"cin_grade": {}, "visit": {}})
    assert sorted(calls) == [0, 1]                      # two distinct data configs, one call each
    (row,) = result["rows"]
    tuples, ref_auc = [], []
    for s in range(3):
        d = np.genfromtxt(tmp_path / "sw" / "points" / f"seed={s}" / "eval" / "scores_test.csv",
                          delimiter=",", names=True)
        tuples.append((d["score"], d["label"].astype(int), d["id"].astype(int) // 3))
        ref_auc.append(skm.roc_auc_score(d["label"], d["score"]))
    ci = M.hierarchical_bootstrap_ci(M.auc, tuples, n_boot=2000, seed=0)
    np.testing.assert_allclose(ci["per_run"], ref_auc, rtol=1e-12)
    assert (row["auc_rw_lo"], row["auc_rw_hi"]) == (ci["low"], ci["high"])
    assert ci["low"] < np.mean(ref_auc) < ci["high"]
    assert "AUC 95% (runs x women)" in (tmp_path / "out" / "table1.md").read_text()
    # without a data section: nan and a note
    _point(tmp_path / "bare", "seed=0", base, rng, 0.7)
    bare = paper_a.write_many(tmp_path / "out2", [tmp_path / "bare"], group_lookup=lookup)
    assert np.isnan(bare["rows"][0]["auc_rw_lo"]) and any("runs x women" in n for n in bare["notes"])


def test_annotation_differences_pair_runs_by_seed_and_split(tmp_path, rng):
    """Box crop − whole image per architecture: run pairs matched by (seed, split), test images aligned
    by id (the box run's CSV is shuffled), per-pair AUC differences against scikit-learn, the interval
    from hierarchical_bootstrap_ci on the paired tuples; a sweep without the reference gives no row."""
    from cervix_jax import metrics as M
    whole = {"name": "baseline", "arch": "lenet", "crop": "none", "freeze_blocks": 0}
    ref_diff, tuples = [], []
    for s in range(3):
        for sweep, model in (("free", whole), ("box", dict(whole, crop="box", box_source="oracle"))):
            d = tmp_path / sweep / "points" / f"seed={s}"
            _point(tmp_path / sweep, f"seed={s}", model, rng, 0.7)
            cfg = json.loads((d / "config.json").read_text())
            (d / "config.json").write_text(json.dumps({**cfg, "seed": s, "data": {"split_seed": s}}))
        a = np.genfromtxt(tmp_path / "box" / "points" / f"seed={s}" / "eval" / "scores_test.csv",
                          delimiter=",", names=True)
        b = np.genfromtxt(tmp_path / "free" / "points" / f"seed={s}" / "eval" / "scores_test.csv",
                          delimiter=",", names=True)
        b["label"] = a["label"]                       # the same women: same labels for the same ids
        perm = rng.permutation(30)
        (tmp_path / "free" / "points" / f"seed={s}" / "eval" / "scores_test.csv").write_text(
            "id,label,score\n" + "".join(f"{int(b['id'][k])},{int(b['label'][k])},{b['score'][k]:.8g}\n"
                                         for k in perm))
        ref_diff.append(skm.roc_auc_score(a["label"], a["score"]) - skm.roc_auc_score(b["label"], b["score"]))
        tuples.append((a["score"], b["score"], a["label"].astype(int), a["id"].astype(int) // 3))
    result = paper_a.write_many(tmp_path / "out", [tmp_path / "free", tmp_path / "box"],
                                lookup=lambda c: {"cin_grade": {}, "visit": {}},
                                group_lookup=lambda c: {i: i // 3 for i in range(30)})
    (d,) = result["differences"]
    assert (d["approach"], d["reference"], d["runs"]) == ("Hu'19 analogue, oracle box, LeNet (Vasudha'18)",
                                                          "LeNet (Vasudha'18)", 3)
    np.testing.assert_allclose(d["per_run"], ref_diff, rtol=1e-12, atol=1e-12)
    ci = M.hierarchical_bootstrap_ci(M.auc, tuples, n_boot=2000, seed=0)
    assert (d["low"], d["high"]) == pytest.approx((ci["low"], ci["high"]))
    assert "table1_differences.md" in result["written"]
    alone = paper_a.write_many(tmp_path / "out2", [tmp_path / "box"], lookup=lambda c: {"cin_grade": {},
                               "visit": {}}, group_lookup=lambda c: {i: i // 3 for i in range(30)})
    assert alone["differences"] == []
    # paired runs that disagree on a test image's label are not the same women: refused
    csv_b = tmp_path / "free" / "points" / "seed=0" / "eval" / "scores_test.csv"
    lines = csv_b.read_text().splitlines()
    i, y, sc = lines[1].split(",")
    csv_b.write_text("\n".join([lines[0], f"{i},{1 - int(y)},{sc}", *lines[2:]]) + "\n")
    with pytest.raises(ValueError, match="label the same test images differently"):
        paper_a.write_many(tmp_path / "out3", [tmp_path / "free", tmp_path / "box"],
                           lookup=lambda c: {"cin_grade": {}, "visit": {}},
                           group_lookup=lambda c: {i: i // 3 for i in range(30)})


def _same_women(point, reference):
    """Rewrites point's test scores to reference's labels (the same women), its rows shuffled."""
    a = np.genfromtxt(reference / "eval" / "scores_test.csv", delimiter=",", names=True)
    b = np.genfromtxt(point / "eval" / "scores_test.csv", delimiter=",", names=True)
    perm = np.random.default_rng(int(a["score"][0] * 1e6)).permutation(len(b))
    (point / "eval" / "scores_test.csv").write_text("id,label,score\n" + "".join(
        f"{int(b['id'][k])},{int(a['label'][k])},{b['score'][k]:.8g}\n" for k in perm))


def test_patch_differences_pair_each_patch_approach_with_each_whole_image_baseline(tmp_path, rng):
    """Patch model − whole-image baseline: one row per (patch approach, annotation-free baseline), run pairs
    by (seed, split) only (a run without its partner is left out), per-pair AUC differences against
    scikit-learn; annotation-using baselines are never a reference; written to table1_differences.md."""
    archs = {"lenet": {"name": "baseline", "arch": "lenet", "crop": "none", "freeze_blocks": 0},
             "vgg16": {"name": "baseline", "arch": "vgg16", "crop": "none", "freeze_blocks": 0},
             "box": {"name": "baseline", "arch": "lenet", "crop": "box", "box_source": "oracle",
                     "freeze_blocks": 0}}
    patch = {"name": "patch", "regulator": "iterative", "spatial_reduction": "sum", "patch_size": 8}
    for name, model, seeds in [*[(k, m, range(3)) for k, m in archs.items()], ("patch", patch, range(4))]:
        for s in seeds:
            _point(tmp_path / name, f"seed={s}", model, rng, 0.7)
            d = tmp_path / name / "points" / f"seed={s}"
            cfg = json.loads((d / "config.json").read_text())
            (d / "config.json").write_text(json.dumps({**cfg, "seed": s, "data": {"split_seed": s}}))
            if name != "lenet" and s < 3:
                _same_women(d, tmp_path / "lenet" / "points" / f"seed={s}")
    kw = dict(lookup=lambda c: {"cin_grade": {}, "visit": {}},
              group_lookup=lambda c: {i: i // 3 for i in range(30)})
    result = paper_a.write_many(tmp_path / "out", [tmp_path / n for n in (*archs, "patch")], **kw)
    diffs = result["patch_differences"]
    patch_name = "Patch model (iterative regulator, Eqn. 5 sum, 8 px patches)"
    assert [(d["approach"], d["reference"], d["runs"]) for d in diffs] == [
        (patch_name, "LeNet (Vasudha'18)", 3), (patch_name, "VGG16", 3)]
    for d, arch in zip(diffs, ("lenet", "vgg16")):
        ref = []
        for s in range(3):
            a = np.genfromtxt(tmp_path / "patch" / "points" / f"seed={s}" / "eval" / "scores_test.csv",
                              delimiter=",", names=True)
            b = np.genfromtxt(tmp_path / arch / "points" / f"seed={s}" / "eval" / "scores_test.csv",
                              delimiter=",", names=True)
            ref.append(skm.roc_auc_score(a["label"], a["score"]) - skm.roc_auc_score(b["label"], b["score"]))
        np.testing.assert_allclose(d["per_run"], ref, rtol=1e-12, atol=1e-12)
        assert d["low"] <= d["estimate"] <= d["high"]
    text = (tmp_path / "out" / "table1_differences.md").read_text()
    assert "| patch-model approach | − whole-image baseline |" in text and text.count(patch_name) == 2
    assert "| annotation-using approach |" in text         # the box crop's own comparison is kept
    none = {"model": dict(patch, regulator="none", spatial_reduction="mean")}
    assert paper_a.approach(none) == ("Patch model (no regulator, Eqn. 5 mean, 8 px patches)", False, "")


def test_table2_one_row_per_patch_size_against_numpy(tmp_path, rng):
    """Table 2: the patch-model runs grouped by patch size (grid from data.pad_to), each row's means and sd
    over its runs against NumPy, sorted by patch size; baselines stay out; one patch size gives no table."""
    sizes = (32, 8, 16)                        # written out of order: the table sorts them
    truth = {}
    for p in sizes:
        for s in range(6):                     # 6 runs: a 3-run bootstrap's percentiles are too discrete
            model = {"name": "patch", "regulator": "iterative", "spatial_reduction": "sum", "patch_size": p}
            name = f"model.patch_size={p}__seed={s}"
            truth.setdefault(p, []).append(_point(tmp_path / "sw", name, model, rng, 0.7))
            path = tmp_path / "sw" / "points" / name / "config.json"
            cfg = json.loads(path.read_text())
            path.write_text(json.dumps({**cfg, "data": {"pad_to": [128, 192], "split_seed": s}}))
    _point(tmp_path / "sw", "baseline", {"name": "baseline", "arch": "lenet", "crop": "none",
                                         "freeze_blocks": 0}, rng, 0.7)
    path = tmp_path / "sw" / "points" / "baseline" / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "data": {"split_seed": 7}}))  # no partner
    kw = dict(lookup=lambda c: {"cin_grade": {}, "visit": {}},
              group_lookup=lambda c: {i: i // 3 for i in range(30)})
    result = paper_a.write_many(tmp_path / "out", [tmp_path / "sw"], **kw)
    rows = result["table2"]
    assert [r["patch_px"] for r in rows] == [8, 16, 32]
    assert [r["grid"] for r in rows] == ["16 x 24", "8 x 12", "4 x 6"]
    for r in rows:
        assert r["runs"] == 6 and r["image"] == "128 x 192"
        assert r["approach"] == f"Patch model (iterative regulator, Eqn. 5 sum, {r['patch_px']} px patches)"
        for k in paper_a.METRICS:
            v = np.array([m[k] for m in truth[r["patch_px"]]])
            np.testing.assert_allclose([r[k], r[k + "_sd"]], [v.mean(), v.std(ddof=1)], rtol=1e-12)
        assert r["auc_lo"] <= r["auc"] <= r["auc_hi"] and r["auc_rw_lo"] <= r["auc_rw_hi"]
    text = (tmp_path / "out" / "table2.md").read_text()
    assert text.count("\n") == 2 + len(sizes) and "| 16 | 8 x 12 | 128 x 192 |" in text
    assert (tmp_path / "out" / "table2_auc.png").stat().st_size > 0
    # a row's numbers (its bootstrap intervals too) are the same approach's Table 1 row: each row draws
    # from its own generator, so neither the other rows nor their order change it
    table1 = {r["approach"]: r for r in result["rows"]}
    for r in rows:
        assert {k: r[k] for k in table1[r["approach"]]} == table1[r["approach"]]
    assert all("patch_px" not in r for r in result["rows"])     # Table 1's rows are not altered
    runs = paper_a.collect([tmp_path / "sw"])
    sixteen = [x for x in runs if "=16__" in x["dir"].name][::-1]      # reversed: order must not matter
    alone_rows = {r["approach"]: r for r in paper_a.table1(sixteen)}
    assert len(alone_rows) == 1
    for name, r in alone_rows.items():
        assert (r["auc_lo"], r["auc_hi"]) == (table1[name]["auc_lo"], table1[name]["auc_hi"])
    # one patch size only: no Table 2
    one = tmp_path / "one"
    (one / "points").mkdir(parents=True)
    for s in range(2):
        src = tmp_path / "sw" / "points" / f"model.patch_size=8__seed={s}"
        shutil.copytree(src, one / "points" / src.name)
    alone = paper_a.write_many(tmp_path / "out2", [one], **kw)
    assert alone["table2"] == [] and not (tmp_path / "out2" / "table2.md").exists()
