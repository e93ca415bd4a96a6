"""cervix_jax.metrics against scikit-learn / scipy on fresh random inputs, ties and degenerate cases."""
import warnings

import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm

from cervix_jax import metrics


def _random_case(rng):
    n = int(rng.integers(1, 80))
    kind = rng.integers(4)
    if kind == 0:
        scores = rng.random(n)  # continuous
    elif kind == 1:
        scores = rng.integers(0, 6, n) / 5.0  # many ties, including exactly 0.5
    elif kind == 2:
        scores = np.full(n, rng.random())  # one score for all
    else:
        scores = rng.beta(0.5, 0.5, n)
    p = rng.choice([0.0, 1.0, rng.random()])  # single-class cases included
    labels = (rng.random(n) < p).astype(np.int64)
    return scores, labels


def _eer_reference(scores, labels):
    """EER from scikit-learn's ROC: walk the segments, solve fpr + tpr = 1 on each."""
    fpr, tpr, _ = skm.roc_curve(labels, scores, drop_intermediate=False)
    for (fa, ta), (fb, tb) in zip(zip(fpr[:-1], tpr[:-1]), zip(fpr[1:], tpr[1:])):
        ga, gb = fa + ta - 1, fb + tb - 1  # fpr - fnr at both ends
        if ga == 0:
            return fa
        if ga < 0 <= gb:
            t = -ga / (gb - ga)
            return fa + t * (fb - fa)
    raise AssertionError("ROC never crosses fnr = fpr")


def test_binary_metrics_match_sklearn_on_random_cases():
    rng = np.random.default_rng(1234)
    n_two_class = 0
    for _ in range(200):
        scores, labels = _random_case(rng)
        threshold = float(rng.choice([0.5, rng.random(), 0.0, 1.0]))
        got = metrics.binary_metrics(scores, labels, threshold)
        pred = (scores >= threshold).astype(np.int64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
            assert got["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, pred))
            assert got["precision"] == pytest.approx(skm.precision_score(labels, pred, zero_division=0))
            assert got["recall"] == pytest.approx(skm.recall_score(labels, pred, zero_division=0))
            assert got["specificity"] == pytest.approx(
                skm.recall_score(labels, pred, pos_label=0, zero_division=0))
            assert got["f1"] == pytest.approx(skm.f1_score(labels, pred, zero_division=0))
        assert got["confusion"] == skm.confusion_matrix(labels, pred, labels=[0, 1]).tolist()
        assert got["n"] == labels.size and got["threshold"] == threshold
        if 0 < labels.sum() < labels.size:
            n_two_class += 1
            assert got["auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
            assert got["one_minus_eer"] == pytest.approx(1 - _eer_reference(scores, labels), abs=1e-12)
        else:
            assert np.isnan(got["auc"]) and np.isnan(got["one_minus_eer"])
    assert n_two_class > 45


def test_roc_curve_matches_sklearn_without_dropping():
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(2, 60))
        scores = rng.integers(0, 10, n) / 9.0
        labels = rng.integers(0, 2, n)
        labels[:2] = [0, 1]
        fpr, tpr, thr = metrics.roc_curve(scores, labels)
        ref_fpr, ref_tpr, ref_thr = skm.roc_curve(labels, scores, drop_intermediate=False)
        np.testing.assert_allclose(fpr, ref_fpr)
        np.testing.assert_allclose(tpr, ref_tpr)
        np.testing.assert_allclose(thr[1:], ref_thr[1:])
        assert thr[0] == np.inf


def test_eer_sanity_and_exact_crossing():
    labels = np.array([0, 0, 1, 1])
    assert metrics.equal_error_rate(np.array([0.1, 0.2, 0.8, 0.9]), labels) == 0.0
    assert metrics.equal_error_rate(np.array([0.9, 0.8, 0.2, 0.1]), labels) == 1.0
    # One positive below one negative: ROC (0,0)-(0,.5)-(.5,.5)-(.5,1)-(1,1); crosses at .5 exactly.
    assert metrics.equal_error_rate(np.array([0.1, 0.7, 0.6, 0.9]), labels) == pytest.approx(0.5)
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 4000)
    assert metrics.equal_error_rate(rng.random(4000), labels) == pytest.approx(0.5, abs=0.04)


def test_binary_metrics_validate_inputs():
    with pytest.raises(ValueError, match="labels must be 0/1"):
        metrics.binary_metrics(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(ValueError, match="scores \\[N\\] and labels \\[N\\]"):
        metrics.binary_metrics(np.array([0.1, 0.2]), np.array([0, 1, 1]))


@pytest.mark.parametrize("criterion", ["youden", "f1"])
def test_choose_threshold_is_the_brute_force_best(criterion):
    rng = np.random.default_rng(11 if criterion == "f1" else 12)
    score_fn = {"youden": skm.balanced_accuracy_score,
                "f1": lambda y, p: skm.f1_score(y, p, zero_division=0)}[criterion]
    for _ in range(40):
        n = int(rng.integers(4, 50))
        scores = np.round(rng.random(n), int(rng.integers(1, 4)))
        labels = (rng.random(n) < scores * 0.6 + 0.2).astype(int)
        labels[:2] = [0, 1]
        best = max(score_fn(labels, (scores >= t).astype(int)) for t in np.unique(scores))
        chosen = metrics.choose_threshold(scores, labels, criterion)
        assert score_fn(labels, (scores >= chosen).astype(int)) == pytest.approx(best)
        assert chosen == scores.min() or chosen not in scores  # halfway between two scores
    with pytest.raises(ValueError, match="single class"):
        metrics.choose_threshold(np.array([0.2, 0.4]), np.array([1, 1]))


def _mean_metric(scores, labels):
    return float(np.mean(scores))


def test_bootstrap_ci_resamples_whole_groups():
    rng = np.random.default_rng(5)
    scores = rng.random(40)
    labels = rng.integers(0, 2, 40)
    single = metrics.bootstrap_ci(_mean_metric, scores, labels, np.arange(40), n_boot=300, seed=9)
    # Each example copied 3 times into one group: the group bootstrap of the mean is unchanged.
    tripled = metrics.bootstrap_ci(_mean_metric, np.repeat(scores, 3), np.repeat(labels, 3),
                                   np.repeat(rng.permutation(40) * 7, 3), n_boot=300, seed=9)
    # Group ids are permuted above, so resamples differ; the interval agrees up to bootstrap noise.
    assert tripled["estimate"] == pytest.approx(single["estimate"])
    assert tripled["low"] == pytest.approx(single["low"], abs=0.03)
    assert tripled["high"] == pytest.approx(single["high"], abs=0.03)
    # Copies with ordered group ids give the very same resamples: identical intervals.
    same_ids = metrics.bootstrap_ci(_mean_metric, np.repeat(scores, 3), np.repeat(labels, 3),
                                    np.repeat(np.arange(40), 3), n_boot=300, seed=9)
    assert (same_ids["low"], same_ids["high"]) == pytest.approx((single["low"], single["high"]))
    # Ignoring the groups (treating copies as independent) would give a much narrower interval.
    naive = metrics.bootstrap_ci(_mean_metric, np.repeat(scores, 3), np.repeat(labels, 3),
                                 np.arange(120), n_boot=300, seed=9)
    assert naive["high"] - naive["low"] < 0.75 * (single["high"] - single["low"])


def test_bootstrap_ci_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(6)
    scores = rng.random(200)
    labels = rng.integers(0, 2, 200)
    got = metrics.bootstrap_ci(_mean_metric, scores, labels, np.arange(200), n_boot=2000, seed=1)
    ref = scipy.stats.bootstrap((scores,), np.mean, n_resamples=2000, method="percentile",
                                confidence_level=0.95, random_state=2).confidence_interval
    assert got["low"] == pytest.approx(ref.low, abs=0.006)
    assert got["high"] == pytest.approx(ref.high, abs=0.006)
    assert got["n_boot"] == 2000


def test_bootstrap_drops_single_class_resamples_for_auc():
    rng = np.random.default_rng(8)
    labels = np.array([0] * 6 + [1])
    scores = rng.random(7)
    got = metrics.bootstrap_ci(metrics.auc, scores, labels, np.arange(7), n_boot=200, seed=0)
    # P(no positive drawn in 7 draws) = (6/7)^7 ~ 0.34: about a third left out.
    assert 90 < got["n_boot"] < 170
    assert 0 <= got["low"] <= got["high"] <= 1


def test_paired_bootstrap_diff_is_bootstrap_of_the_difference_for_a_linear_metric():
    rng = np.random.default_rng(10)
    a, b = rng.random(60), rng.random(60) * 0.8
    labels = rng.integers(0, 2, 60)
    groups = rng.integers(0, 20, 60)
    diff = metrics.paired_bootstrap_diff(_mean_metric, a, b, labels, groups, n_boot=400, seed=4)
    ref = metrics.bootstrap_ci(_mean_metric, a - b, labels, groups, n_boot=400, seed=4)
    for key in ("estimate", "low", "high"):
        assert diff[key] == pytest.approx(ref[key])
    assert diff["estimate"] == pytest.approx(a.mean() - b.mean())
    same = metrics.paired_bootstrap_diff(metrics.auc, a, a, labels, groups, n_boot=50, seed=0)
    assert same["low"] == same["high"] == 0.0


def test_hierarchical_bootstrap_ci_resamples_runs_and_women(rng):
    """Per-run AUCs against scikit-learn; runs that disagree widen the interval beyond a women-only
    bootstrap of the pooled images; the paired form of a mean metric equals hierarchical_bootstrap_diff
    (same resamples); an arm against itself gives exactly 0."""
    seed = int(rng.integers(1 << 30))
    runs, pooled = [], []
    for k, sep in enumerate((0.2, 1.5, 4.0)):                 # run AUCs ~0.56, ~0.86, ~1.0
        n = int(rng.integers(40, 60))
        labels = rng.integers(0, 2, n)
        labels[:2] = (0, 1)
        groups = rng.integers(0, n // 3, n)
        scores = rng.normal(size=n) + sep * labels
        runs.append((scores, labels, groups))
        pooled.append((scores, labels, groups + 1000 * k))
    out = metrics.hierarchical_bootstrap_ci(metrics.auc, runs, n_boot=400, seed=seed)
    ref = [skm.roc_auc_score(y, s) for s, y, _ in runs]
    np.testing.assert_allclose(out["per_run"], ref, rtol=1e-12, err_msg=f"seed {seed}")
    assert out["estimate"] == pytest.approx(np.mean(ref)), f"seed {seed}"
    assert out["low"] < out["estimate"] < out["high"], f"seed {seed}"
    s, y, g = (np.concatenate(x) for x in zip(*pooled))
    women_only = metrics.bootstrap_ci(metrics.auc, s, y, g, n_boot=400, seed=seed)
    assert out["high"] - out["low"] > 1.5 * (women_only["high"] - women_only["low"]), f"seed {seed}"

    b = [r[0] + rng.normal(size=r[0].size) for r in runs]
    paired = metrics.hierarchical_bootstrap_ci(lambda sc, _: sc.mean(),
                                               [(r[0], bb, r[1], r[2]) for r, bb in zip(runs, b)],
                                               n_boot=200, seed=seed)
    diff = metrics.hierarchical_bootstrap_diff([r[0] - bb for r, bb in zip(runs, b)], [r[2] for r in runs],
                                               n_boot=200, seed=seed)
    for key in ("estimate", "low", "high"):
        assert paired[key] == pytest.approx(diff[key], rel=1e-9, abs=1e-12), f"seed {seed}"
    same = metrics.hierarchical_bootstrap_ci(metrics.auc, [(r[0], r[0], r[1], r[2]) for r in runs],
                                             n_boot=50, seed=seed)
    assert same["low"] == same["high"] == same["estimate"] == 0.0
    with pytest.raises(ValueError, match="expected \\(scores, labels, groups\\)"):
        metrics.hierarchical_bootstrap_ci(metrics.auc, [(s, y)])
