"""Evaluation metrics vs NumPy, scikit-learn and scipy references, on random maps and masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import jaccard_score

from cervix_jax.explain import faithfulness as ev


def random_mask(rng, h, w):
    cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, min(h, w) / 2)
    yy, xx = np.mgrid[:h, :w]
    return (((yy - cy) ** 2 + (xx - cx) ** 2) < r**2).astype(np.uint8)


def test_roi_pointing_iou_batched(rng):
    b, h, w = 6, 17, 23
    heat = rng.uniform(0, 1, size=(b, h, w)).astype(np.float32)
    masks = np.stack([random_mask(rng, h, w) for _ in range(b)])
    masks[0] = 0
    masks[0, 3, 4] = 1
    heat[0, 3, 4] = 2.0                                          # a sure hit
    got = jax.jit(jax.vmap(lambda hh, m: (ev.roi_area(hh, 0.3), ev.pointing_game(hh, m),
                                          ev.iou(hh, m, 0.3))))(heat, masks)
    for i in range(b):
        assert got[0][i] == pytest.approx(np.mean(heat[i] >= 0.3))
        y, x = np.unravel_index(np.argmax(heat[i]), (h, w))
        assert got[1][i] == float(masks[i, y, x] > 0)
        ref = jaccard_score(masks[i].ravel(), (heat[i] >= 0.3).ravel().astype(np.uint8))
        assert got[2][i] == pytest.approx(ref, rel=1e-6)
    assert got[1][0] == 1.0
    assert np.isnan(ev.iou(jnp.zeros((4, 4)), jnp.zeros((4, 4)), 0.2))


def test_blurred_matches_scipy(rng):
    x = rng.uniform(0, 1, size=(20, 24, 3)).astype(np.float32)
    ref = ndimage.gaussian_filter(x.astype(np.float64), sigma=(2.0, 2.0, 0), mode="mirror", truncate=3.0)
    np.testing.assert_allclose(ev.blurred(x, 2.0), ref, rtol=1e-5, atol=1e-6)


def tiny_score(rng):
    a = rng.normal(size=3).astype(np.float32)
    wmap = rng.normal(size=(12, 10)).astype(np.float32)
    jax_fn = lambda x: jax.nn.sigmoid(jnp.mean(jnp.tanh(x @ a) * wmap) * 4)  # noqa: E731
    np_fn = lambda x: 1 / (1 + np.exp(-np.mean(np.tanh(x @ a.astype(np.float64)) * wmap) * 4))  # noqa: E731
    return jax_fn, np_fn


def numpy_curve(np_fn, start, end, heat, steps):
    order = np.argsort(-heat.ravel(), kind="stable")
    n = heat.size
    curve = []
    for k in range(steps + 1):
        x = start.astype(np.float64).reshape(n, -1).copy()
        idx = order[:int(np.round(k * n / steps))]
        x[idx] = end.reshape(n, -1)[idx]
        curve.append(np_fn(x.reshape(start.shape)))
    curve = np.array(curve)
    return curve, np.trapezoid(curve, dx=1 / steps)


def test_deletion_insertion_match_numpy_loop(rng):
    jax_fn, np_fn = tiny_score(rng)
    x = rng.uniform(0, 1, size=(12, 10, 3)).astype(np.float32)
    heat = rng.uniform(0, 1, size=(12, 10)).astype(np.float32)
    heat[0, :4] = heat[0, 0]                                     # ties are broken row-major
    zeros = np.zeros_like(x)
    curve, auc = ev.deletion(jax_fn, x, heat, steps=9, batch_size=4)
    ref_curve, ref_auc = numpy_curve(np_fn, x, zeros, heat, 9)
    np.testing.assert_allclose(curve, ref_curve, rtol=1e-5)
    assert float(auc) == pytest.approx(ref_auc, rel=1e-5)
    blur = np.asarray(ev.blurred(x))
    curve, auc = ev.insertion(jax_fn, x, heat, steps=9)
    ref_curve, ref_auc = numpy_curve(np_fn, blur, x, heat, 9)
    np.testing.assert_allclose(curve, ref_curve, rtol=1e-5)
    assert float(auc) == pytest.approx(ref_auc, rel=1e-5)


def test_metrics_and_heatmaps_ignore_the_padding(rng):
    """An image smaller than pad_to (valid = its top-left h x w pixels): ROI area, pointing game, IoU,
    deletion/insertion and the heatmap's max-normalisation see the image pixels only (issue 15)."""
    from PIL import Image
    from cervix_jax.explain import postprocess
    H, W, h, w = 12, 10, 7, 6
    valid = np.zeros((H, W), np.uint8)
    valid[:h, :w] = 1
    v = valid > 0
    heat = rng.uniform(0, 0.9, size=(H, W)).astype(np.float32)
    heat[H - 1, W - 1] = 1.0                                     # the global maximum lies in the padding
    mask = random_mask(rng, H, W)
    mask[H - 1, W - 1] = 0
    t = 0.3
    got = jax.jit(lambda hh, m, vv: (ev.roi_area(hh, t, vv), ev.pointing_game(hh, m, vv),
                                     ev.iou(hh, m, t, vv)))(heat, mask, valid)
    assert float(got[0]) == pytest.approx(np.mean(heat[v] >= t))
    y, x = np.unravel_index(np.argmax(np.where(v, heat, -1)), (H, W))
    assert float(got[1]) == float(mask[y, x] > 0)
    any_kept = mask[v].any() or (heat[v] >= t).any()
    ref = jaccard_score(mask[v].ravel() > 0, heat[v].ravel() >= t) if any_kept else np.nan
    assert float(got[2]) == pytest.approx(ref, rel=1e-6)
    # deletion / insertion: only the h*w image pixels are ordered and replaced
    jax_fn, np_fn = tiny_score(rng)
    img = rng.uniform(0, 1, size=(H, W, 3)).astype(np.float32) * v[..., None]
    steps = 5
    sub = lambda a: a[:h, :w]  # noqa: E731

    def np_full(sub_image):
        full = img.astype(np.float64).copy()
        full[:h, :w] = sub_image
        return np_fn(full)

    curve, auc = ev.deletion(jax_fn, img, heat, steps=steps, valid=valid)
    ref_curve, ref_auc = numpy_curve(np_full, sub(img), np.zeros((h, w, 3)), sub(heat), steps)
    np.testing.assert_allclose(curve, ref_curve, rtol=1e-5)
    assert float(auc) == pytest.approx(ref_auc, rel=1e-5)
    # insertion starts from the blur of the image pixels alone (normalised convolution)
    num = ndimage.gaussian_filter(img.astype(np.float64) * v[..., None], (5, 5, 0), mode="mirror",
                                  truncate=3.0)
    den = ndimage.gaussian_filter(v.astype(np.float64), 5, mode="mirror", truncate=3.0)
    blur = num / den[..., None]
    np.testing.assert_allclose(np.asarray(ev.blurred(img, valid=valid))[v], blur[v], rtol=1e-4, atol=1e-6)
    curve, auc = ev.insertion(jax_fn, img, heat, steps=steps, valid=valid)
    ref_curve, ref_auc = numpy_curve(np_full, sub(blur), sub(img), sub(heat), steps)
    np.testing.assert_allclose(curve, ref_curve, rtol=1e-4)
    # heatmap: the max over the feature cells holding image pixels, 0 on the padding
    # 4x2-pixel cells; rows 0-1 and cols 0-2 hold pixels
    raw = rng.uniform(0, 1, size=(3, 5)).astype(np.float32)
    raw[2, 4] = 5.0                                              # a cell of padding only
    keep = np.zeros((3, 5), bool)
    keep[:2, :3] = True
    norm = np.where(keep, raw, 0) / raw[keep].max()
    up = np.asarray(Image.fromarray(norm, mode="F").resize((W, H), Image.BILINEAR))
    got = np.asarray(postprocess.heatmap(raw, (H, W), valid=valid))
    np.testing.assert_allclose(got, np.where(v, up, 0), rtol=1e-5, atol=1e-6)
    # unmasked: the padding wins
    assert np.asarray(postprocess.heatmap(raw, (H, W)))[v].max() < 0.5 * got[v].max()
