"""group_split: no leakage, a partition, stratified ratios, determinism; sizes compared with
scikit-learn's StratifiedGroupKFold."""
import numpy as np
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from cervix_jax.data.split import group_split


def _dataset(rng, n_groups=120, p_positive=0.3, mixed=0.0):
    """Groups of 1..6 images; a group's images share its label except a `mixed` fraction flipped."""
    sizes = rng.integers(1, 7, n_groups)
    groups = np.repeat(rng.permutation(n_groups * 3)[:n_groups], sizes)  # arbitrary, unsorted ids
    labels = np.repeat((rng.random(n_groups) < p_positive).astype(int), sizes)
    flip = rng.random(labels.size) < mixed
    labels[flip] = 1 - labels[flip]
    return labels, groups


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_partition_without_group_leakage_and_with_class_ratios(seed):
    rng = np.random.default_rng(100 + seed)
    labels, groups = _dataset(rng, mixed=0.05 if seed % 2 else 0.0)
    split = group_split(labels, groups, seed=seed)
    everything = np.concatenate([split["train"], split["val"], split["test"]])
    np.testing.assert_array_equal(np.sort(everything), np.arange(labels.size))  # each exactly once
    for name, idx in split.items():
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0), name
    sets = {name: set(groups[idx].tolist()) for name, idx in split.items()}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"]
    assert not sets["val"] & sets["test"]
    n = labels.size
    assert abs(split["test"].size / n - 0.2) < 0.03
    assert abs(split["val"].size / n - 0.8 * 0.2) < 0.03
    whole = labels.mean()
    for name, idx in split.items():
        assert abs(labels[idx].mean() - whole) < 0.04, (name, labels[idx].mean(), whole)


def test_deterministic_from_seed_and_different_across_seeds():
    labels, groups = _dataset(np.random.default_rng(5))
    a = group_split(labels, groups, seed=7)
    b = group_split(labels.copy(), groups.copy(), seed=7)
    c = group_split(labels, groups, seed=8)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["test"], c["test"])


def test_fractions_and_zero_val():
    labels, groups = _dataset(np.random.default_rng(6), n_groups=200)
    split = group_split(labels, groups, test_fraction=0.3, val_fraction=0.0, seed=0)
    assert split["val"].size == 0
    assert abs(split["test"].size / labels.size - 0.3) < 0.03
    assert split["train"].size + split["test"].size == labels.size


def test_comparable_to_stratified_group_kfold():
    """Our test split vs one fold of StratifiedGroupKFold(5): same size, no worse class balance."""
    rng = np.random.default_rng(9)
    ours_err, sk_err = [], []
    for seed in range(5):
        labels, groups = _dataset(rng, n_groups=150, p_positive=0.3)
        ours = group_split(labels, groups, test_fraction=0.2, val_fraction=0.0, seed=seed)["test"]
        folds = StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(np.zeros(labels.size), labels,
                                                                              groups)
        sk_test = next(folds)[1]
        assert abs(ours.size - sk_test.size) <= 0.05 * labels.size
        ours_err.append(abs(labels[ours].mean() - labels.mean()))
        sk_err.append(abs(labels[sk_test].mean() - labels.mean()))
    assert np.mean(ours_err) <= np.mean(sk_err) + 0.01, (ours_err, sk_err)


def test_errors_on_too_few_groups_and_bad_input():
    labels = np.array([0, 0, 0, 0, 1, 1])
    groups = np.array([1, 2, 3, 4, 5, 5])  # one positive group only
    with pytest.raises(ValueError, match="class 1 occurs in 1 group"):
        group_split(labels, groups)
    with pytest.raises(ValueError, match="labels \\[N\\] and groups \\[N\\]"):
        group_split(labels, groups[:-1])
    with pytest.raises(ValueError, match="test_fraction must be in"):
        group_split(labels, groups, test_fraction=1.0)


def test_every_class_reaches_every_split_with_few_groups():
    labels = np.array([0] * 30 + [1] * 9)
    groups = np.r_[np.repeat(np.arange(10), 3), np.repeat([20, 21, 22], 3)]
    for seed in range(5):
        split = group_split(labels, groups, seed=seed)
        for name, idx in split.items():
            assert set(labels[idx].tolist()) == {0, 1}, (seed, name)
