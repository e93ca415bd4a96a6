"""Paper A's regulator ablation report on fabricated per-run measurements, against NumPy, scikit-learn
and the metrics module's bootstraps called on independently assembled inputs."""
import numpy as np
import pytest
from sklearn import metrics as skm

from cervix_jax import metrics as M
from cervix_jax.reports import paper_a, regulator_ablation as RA

N_TEST, N_TRAIN = 24, 30


def _records(rng, effects, runs=(0, 1, 2, 3)):
    """One record per (arm, run). effects[arm] = {metric: shift}; per-image values share a per-run base
    so that arms of a run are paired image by image; an arm's shift of 0 leaves it equal to the base."""
    records = []
    for k in runs:
        base = {m: rng.uniform(0, 1, N_TRAIN if m in RA.PER_TRAIN_IMAGE else N_TEST)
                for m in RA.PER_TEST_IMAGE + RA.PER_TRAIN_IMAGE}
        labels = np.r_[np.zeros(N_TEST // 2, int), np.ones(N_TEST // 2, int)]
        ids = rng.permutation(1000)[:N_TEST] + 100 * k
        score0 = rng.uniform(0, 1, N_TEST)
        for arm, eff in effects.items():
            r = {m: (base[m] + eff.get(m, 0.0)).tolist() for m in base}
            score = np.clip(score0 + eff.get("score", 0.0) * labels, 0, 2)
            r.update(arm=arm, seed=k, split_seed=k, dir=f"{arm}-{k}", test_ids=[int(i) for i in ids],
                     test_groups=[int(i) // 3 for i in range(N_TEST)],
                     train_groups=[i // 3 for i in range(N_TRAIN)],
                     auc=float(skm.roc_auc_score(labels, score)), init_err=[3.0] * N_TRAIN,
                     scores={int(i): (float(s), int(y)) for i, s, y in zip(ids, score, labels)})
            records.append(r)
    return records


def test_verdict_reads_the_interval_on_the_papers_side():
    assert RA.verdict(0.1, 0.3, +1) == "reproduced" and RA.verdict(-0.3, -0.1, -1) == "reproduced"
    assert RA.verdict(-0.3, -0.1, +1) == "refuted" and RA.verdict(0.1, 0.3, -1) == "refuted"
    assert RA.verdict(-0.1, 0.2, +1) == RA.verdict(0.0, 0.0, -1) == RA.verdict(np.nan, 1, 1) == "undecided"


def test_paired_difference_pairs_runs_and_images(rng):
    recs = _records(rng, {"iterative/sum": {"mass_cervix": 0.2, "score": 0.5}, "none/sum": {}})
    recs += _records(rng, {"iterative/sum": {}}, runs=(9,))           # a run without its pair: left out
    rng.shuffle(recs)
    d = RA.paired_difference(recs, "iterative/sum", "none/sum", "mass_cervix", n_boot=500)
    runs = sorted({r["seed"] for r in recs if r["arm"] == "none/sum"})
    by = {(r["arm"], r["seed"]): r for r in recs}
    diffs = [np.subtract(by["iterative/sum", k]["mass_cervix"], by["none/sum", k]["mass_cervix"])
             for k in runs]
    groups = [np.asarray(by["iterative/sum", k]["test_groups"]) for k in runs]
    ref = M.hierarchical_bootstrap_diff(diffs, groups, n_boot=500, seed=0)
    assert d["runs"] == 4
    np.testing.assert_allclose(d["per_run"], [x.mean() for x in diffs], rtol=1e-12)
    assert (d["estimate"], d["low"], d["high"]) == pytest.approx((ref["estimate"], ref["low"], ref["high"]))
    np.testing.assert_allclose(d["per_run"], 0.2, atol=1e-12)
    a = RA.paired_difference(recs, "iterative/sum", "none/sum", "auc", n_boot=500)
    want = [by["iterative/sum", k]["auc"] - by["none/sum", k]["auc"] for k in runs]
    np.testing.assert_allclose(a["per_run"], want, rtol=1e-9, atol=1e-12)
    assert a["low"] <= a["estimate"] <= a["high"]
    assert RA.paired_difference(recs, "iterative/sum", "fixed/sum", "auc") == {}


def test_write_gives_each_claim_its_verdict(tmp_path, rng):
    effects = {"none/sum": {}, "fixed/sum": {"reg_err": 0.0},
               "iterative/sum": {"mass_cervix": 0.25, "iou_excess": 0.0, "reg_err": +0.5, "score": 0.0}}
    result = RA.write_tables(_records(rng, effects), tmp_path, n_boot=500)
    got = {(c["metric"], c["reduction"]): c["verdict"] for c in result["claims"]}
    assert got == {("mass_cervix", "sum"): "reproduced",   # planted +0.25 on every image
                   ("iou_excess", "sum"): "undecided",     # identical arms: interval [0, 0]
                   ("reg_err", "sum"): "refuted",          # the iterative regulator ends 0.5 further away
                   ("auc", "sum"): "undecided"}            # identical scores
    rows = {r["arm"]: r for r in result["arms"]}
    assert rows["iterative/sum"]["runs"] == 4
    for f in ("regulator_ablation.md", "regulator_ablation.json", "ablation_differences.png"):
        assert (tmp_path / f).stat().st_size > 0
    md = (tmp_path / "regulator_ablation.md").read_text()
    assert "| iterative/sum − none/sum | mass_cervix | 4 | +0.250 |" in md


def test_add_controls_area_matched_blob(rng):
    masks = np.zeros((3, 24, 36), np.uint8)
    for i in range(3):
        y, x = rng.integers(4, 12), rng.integers(4, 20)
        masks[i, y:y + 10, x:x + 14] = 1
    roi = rng.uniform(0.05, 0.6, 3)
    iou = rng.uniform(0, 1, 3)
    out = RA.add_controls({"roi_area": roi.tolist(), "iou_cervix": iou.tolist()}, masks)
    for i in range(3):
        region = paper_a.area_matched_centre_region(roi[i], (24, 36))
        inter = (region & (masks[i] > 0)).sum()
        want = inter / (region | (masks[i] > 0)).sum()
        assert out["iou_area_matched"][i] == pytest.approx(want)
        assert out["iou_excess"][i] == pytest.approx(iou[i] - want)


def test_arm_of_calls_a_run_without_the_spatial_term_none():
    import ml_collections as mlc

    cfg = lambda reg, lam, red: mlc.ConfigDict({"model": {"regulator": reg, "reg_lambda": lam,
                                                           "spatial_reduction": red}})
    assert RA.arm_of(cfg("iterative", 0.1, "mean")) == "iterative/mean"
    assert RA.arm_of(cfg("fixed", 0.1, "sum")) == "fixed/sum"
    assert RA.arm_of(cfg("none", 0.1, "sum")) == "none/sum"
    assert RA.arm_of(cfg("iterative", 0.0, "mean")) == RA.arm_of(cfg("fixed", 0, "mean")) == "none/mean"


def test_finished_runs_reads_sweeps_and_single_runs(tmp_path):
    def done(d):
        (d / "eval").mkdir(parents=True)
        (d / "eval" / "metrics.json").write_text("{}")
    sweep = tmp_path / "sweep"
    for name in ("b", "a"):
        done(sweep / "points" / name)
    (sweep / "points" / "unfinished").mkdir()
    done(tmp_path / "run")
    assert RA.finished_runs([sweep, tmp_path / "run"]) == [sweep / "points" / "a", sweep / "points" / "b",
                                                           tmp_path / "run"]
    (tmp_path / "empty" / "points").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"empty: no finished run"):
        RA.finished_runs([sweep, tmp_path / "empty"])
    with pytest.raises(SystemExit):
        RA.main([str(sweep), str(tmp_path / "run")])        # several workdirs need --out


def test_paired_auc_uses_every_scored_image_when_the_maps_cover_fewer(rng):
    """Runs whose map metrics cover only explain.max_images test images (test_ids) still pair their AUC over
    every scored test image, each with its woman (score_groups): the same interval as with full coverage."""
    full = _records(rng, {"iterative/mean": {"score": 0.4}, "none/mean": {}})
    cut = []
    for r in full:
        r = dict(r, score_groups=dict(zip(r["test_ids"], r["test_groups"])))
        cut.append(dict(r, test_ids=r["test_ids"][:5], test_groups=r["test_groups"][:5]))
    want = RA.paired_difference(full, "iterative/mean", "none/mean", "auc", n_boot=300)
    got = RA.paired_difference(cut, "iterative/mean", "none/mean", "auc", n_boot=300)
    assert got == want


def test_one_none_arm_stands_beside_both_reductions(tmp_path, rng):
    """Lambda-0 runs train the same loss whatever Eqn. 5's reduction: when only "none/mean" was run, the
    sum arms' claims are paired with it, and the numbers are those of a direct pairing."""
    effects = {"none/mean": {}, "fixed/mean": {}, "iterative/mean": {"mass_cervix": 0.1},
               "fixed/sum": {"mass_cervix": -0.3}, "iterative/sum": {"mass_cervix": -0.2, "score": 0.3}}
    recs = _records(rng, effects)
    assert RA.none_arms({"none/mean", "fixed/sum"}) == {"sum": "none/mean", "mean": "none/mean"}
    assert RA.none_arms({"none/sum", "none/mean"}) == {"sum": "none/sum", "mean": "none/mean"}
    result = RA.write_tables(recs, tmp_path, n_boot=300)
    claims = {(c["metric"], c["reduction"]): c for c in result["claims"]}
    assert len(claims) == 8
    c = claims["mass_cervix", "sum"]
    assert (c["a"], c["b"]) == ("iterative/sum", "none/mean") and c["verdict"] == "refuted"
    ref = RA.paired_difference(recs, "iterative/sum", "none/mean", "mass_cervix", n_boot=300)
    assert (c["estimate"], c["low"], c["high"]) == pytest.approx((ref["estimate"], ref["low"], ref["high"]))
    np.testing.assert_allclose(c["per_run"], -0.2, atol=1e-12)
    assert claims["mass_cervix", "mean"]["verdict"] == "reproduced"
    diffs = {(d["a"], d["b"], d["metric"]) for d in result["differences"]}
    assert ("fixed/sum", "none/mean", "mass_cervix") in diffs
    assert ("iterative/sum", "fixed/sum", "reg_err") in diffs
    md = (tmp_path / "regulator_ablation.md").read_text()
    assert "| iterative/sum − none/mean | mass_cervix | 4 | -0.200 |" in md
