"""Group-aware, stratified train/val/test split (no woman/session in two splits).

Each group is assigned the majority label of its examples (ties -> the larger label). Within each
class, the groups are shuffled by the seed, ordered largest first, and greedily given to the held-out
split while that brings its image count closer to `fraction` of the class's images; so every split
keeps the class ratio of the whole up to one group's size. Validation is carved from the remaining
train part by the same rule. Every class needs a group in every non-empty split.
"""
from __future__ import annotations

import numpy as np


def _hold_out(labels: np.ndarray, groups: np.ndarray, fraction: float, rng: np.random.Generator,
              what: str) -> np.ndarray:
    """Boolean [N]: the examples whose groups go to the held-out part."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    size = np.bincount(inverse)
    positives = np.bincount(inverse, weights=labels)
    group_label = (2 * positives >= size).astype(np.int64)  # majority, ties -> 1
    held = np.zeros(uniq.size, bool)
    if fraction == 0:
        return held[inverse]
    for c in (0, 1):
        members = np.flatnonzero(group_label == c)
        if members.size == 0:
            continue
        if members.size < 2:
            raise ValueError(
                f"group_split: class {c} has {members.size} group(s) in the {what} part; need at least 2 "
                f"(one for each side) to split it by group. Use fewer splits or more groups.")
        members = rng.permutation(members)
        members = members[np.argsort(-size[members], kind="stable")]
        target = fraction * size[members].sum()
        count = 0
        for g in members:
            if count + size[g] / 2 < target:  # adding g brings the count closer to the target
                held[g] = True
                count += size[g]
        if not held[members].any():  # every group was too large: take the smallest
            held[members[-1]] = True
        if held[members].all():
            held[members[0]] = False
    return held[inverse]


def group_split(labels, groups, *, test_fraction: float = 0.2, val_fraction: float = 0.2,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Splits example positions 0..N-1 into {"train", "val", "test"} (sorted int64 arrays).

    labels [N] in {0, 1}; groups [N] (any ids). test_fraction of the images (by group) go to test;
    val_fraction of the rest to val. Deterministic from seed.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if labels.ndim != 1 or groups.shape != labels.shape:
        raise ValueError(f"group_split: expected labels [N] and groups [N], got {labels.shape} and "
                         f"{groups.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"group_split: labels must be 0/1, found {np.unique(labels)[:10].tolist()}")
    for name, f in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 <= f < 1:
            raise ValueError(f"group_split: {name} must be in [0, 1), got {f}")
    needed = 1 + (test_fraction > 0) + (val_fraction > 0)
    for c in (0, 1):
        n_groups = len({g for g, y in zip(groups.tolist(), labels.tolist()) if y == c})
        if 0 < n_groups < needed:
            raise ValueError(f"group_split: class {c} occurs in {n_groups} group(s); splitting into {needed} "
                             f"parts by group needs at least {needed} groups of each class")
    rng = np.random.default_rng(seed)
    position = np.arange(labels.size)
    test = _hold_out(labels, groups, test_fraction, rng, "whole")
    rest = position[~test]
    val = _hold_out(labels[rest], groups[rest], val_fraction, rng, "train (after test)")
    return {"train": rest[~val], "val": rest[val], "test": position[test]}
