"""scripts/patch_feature_probe.py: its poolings against a per-image loop, and its refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import patch_feature_probe as probe  # noqa: E402


def test_poolings_match_a_per_image_loop(rng):
    n, p, k, cut = 7, 12, 5, 0.5
    feats = rng.normal(size=(n, p, k)).astype(np.float32)
    frac = rng.uniform(size=(n, p)).astype(np.float32)
    frac[3] = 0.1                                          # an image without a lesion patch
    got = probe.pooled(feats, frac, cut)
    for i in range(n):
        on = [j for j in range(p) if frac[i, j] >= cut]
        want_oracle = feats[i, on].mean(0) if on else feats[i].mean(0)
        np.testing.assert_allclose(got["mean, lesion patches (oracle)"][i], want_oracle, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["mean, all patches"][i], feats[i].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got["max, all patches"][i], feats[i].max(0))


def test_refuses_unknown_data_and_a_label_other_than_dysplasia():
    with pytest.raises(SystemExit, match="'nope'"):
        probe.probe("nope", 1, 0, 0.5, 8)
    with pytest.raises(SystemExit, match="'treatability'"):
        probe.probe("tiny", 1, 0, 0.5, 8)
