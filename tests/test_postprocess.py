"""Heatmap post-processing vs NumPy, PIL and matplotlib references."""
import jax
import matplotlib
import numpy as np
import pytest
from PIL import Image

from cervix_jax.explain import postprocess as pp


def pil_bilinear(a, shape):
    return np.asarray(Image.fromarray(np.asarray(a, np.float32), mode="F").resize(
        (shape[1], shape[0]), Image.BILINEAR), np.float64)


def test_upsample_bilinear_matches_pil_and_nearest_matches_formula(rng):
    a = rng.normal(size=(5, 7)).astype(np.float32)
    for shape in [(20, 28), (37, 50)]:
        np.testing.assert_allclose(pp.upsample(a, shape), pil_bilinear(a, shape), rtol=1e-5, atol=1e-5)
        rows = np.floor((np.arange(shape[0]) + 0.5) * 5 / shape[0]).astype(int)
        cols = np.floor((np.arange(shape[1]) + 0.5) * 7 / shape[1]).astype(int)
        np.testing.assert_array_equal(pp.upsample(a, shape, "nearest"), a[rows][:, cols])
    with pytest.raises(ValueError, match="method"):
        pp.upsample(a, (10, 14), "cubic")


def test_heatmap_normalise_threshold_uint8(rng):
    raw = rng.normal(size=(6, 8)).astype(np.float32)
    r = np.maximum(raw.astype(np.float64), 0)
    ref = pil_bilinear(r / r.max(), (24, 32))
    heat = np.asarray(pp.heatmap(raw, (24, 32)))
    np.testing.assert_allclose(heat, ref, rtol=1e-5, atol=1e-6)
    assert heat.min() >= 0 and heat.max() <= 1
    cut = np.asarray(pp.threshold(heat, 0.3))
    np.testing.assert_array_equal(cut, np.where(heat >= 0.3, heat, 0))
    np.testing.assert_array_equal(pp.to_uint8(cut), np.round(np.clip(cut, 0, 1) * 255).astype(np.uint8))
    np.testing.assert_array_equal(pp.normalize(-np.abs(raw)), np.zeros_like(raw))


def test_jet_matches_matplotlib(rng):
    x = np.concatenate([rng.uniform(0, 1, 5000), [0.0, 1.0, 0.5, 1 / 256, 255 / 256]]).astype(np.float32)
    ref = matplotlib.colormaps["jet"](x)[:, :3]
    np.testing.assert_allclose(pp.jet(x), ref, atol=1e-6)
    # RGB order: jet is blue at 0 and red at 1
    assert pp.jet(np.float32(0.0))[2] > 0.4 and pp.jet(np.float32(1.0))[0] > 0.4


def test_jet_overlay_batched_matches_numpy(rng):
    img = rng.integers(0, 256, size=(3, 10, 12, 3), dtype=np.uint8)
    heat = rng.uniform(0, 1, size=(3, 10, 12)).astype(np.float32)
    colour = matplotlib.colormaps["jet"](heat)[..., :3] * 255
    blend = 0.7 * img + 0.3 * colour
    ref = np.round(np.where((heat >= 0.25)[..., None], blend, img)).astype(np.uint8)
    got = np.asarray(jax.jit(lambda i, h: pp.jet_overlay(i, h, alpha=0.3, threshold=0.25))(img, heat))
    assert got.dtype == np.uint8
    assert np.abs(got.astype(int) - ref).max() <= 1          # float32 vs float64 rounding
    assert np.mean(got == ref) > 0.99
    with pytest.raises(ValueError, match="jet_overlay"):
        pp.jet_overlay(img, heat[0])
