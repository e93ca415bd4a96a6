"""The Grad-CAM family, perturbation methods, Eigen-CAM, IG and the registry vs NumPy references."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cervix_jax.explain import (REGISTRY, ablationcam, cam, eigencam, explain, gradcam,
                                gradcam_plus_plus, hirescam, integrated_gradients, layercam,
                                occlusion, scorecam, xgradcam)
from cervix_jax.explain.perturbation import window_starts
from cervix_jax.models.parts import ExplainableModel

H, W, S, K, C = 16, 20, 4, 6, 3          # image 16x20, features 4x5xK (4x4 average pooling)


def softmax64(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class Tiny:
    """features = tanh(avgpool4(x) A + a); scores = softmax(mean(features) Wd + b). JAX and NumPy."""

    def __init__(self, rng):
        self.A = rng.normal(size=(3, K)).astype(np.float32)
        self.a = rng.normal(size=K).astype(np.float32)
        self.Wd = rng.normal(size=(K, C)).astype(np.float32)
        self.b = rng.normal(size=C).astype(np.float32)

    def features(self, x, xp=jnp):
        pooled = x.reshape(H // S, S, W // S, S, 3).mean((1, 3))
        return xp.tanh(pooled @ self.A + self.a)

    def post_pool(self, p, xp=jnp):
        z = p @ self.Wd + self.b
        return jax.nn.softmax(z) if xp is jnp else softmax64(z)

    def head(self, f, xp=jnp):
        return self.post_pool(f.mean((0, 1)), xp)

    def scores(self, x, xp=jnp):
        return self.head(self.features(x, xp), xp)

    def explainable(self, kernel=True):
        return ExplainableModel(features=self.features, head=self.head, scores=self.scores,
                                post_pool=self.post_pool, kernel=jnp.asarray(self.Wd) if kernel else None)

    def np(self, fn):
        return lambda x: getattr(self, fn)(np.asarray(x, np.float64), np)


@pytest.fixture
def model(rng):
    return Tiny(rng)


def test_gradcam_and_hirescam_equal_relu_cam_over_hw(rng):
    f = rng.normal(size=(5, 7, K)).astype(np.float32)
    kern = rng.normal(size=(K, C)).astype(np.float32)
    bias = rng.normal(size=C).astype(np.float32)
    head = lambda x: x.mean((0, 1)) @ kern + bias  # noqa: E731  linear GAP + dense
    ref = np.maximum(np.einsum("hwk,k->hw", f.astype(np.float64), kern[:, 1].astype(np.float64)), 0) / 35
    np.testing.assert_allclose(gradcam(head, f, 1), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(hirescam(head, f, 1), ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jax.nn.relu(cam(f, kern)[..., 1]) / 35, ref, rtol=1e-5, atol=1e-7)


def test_gradient_cams_match_pytorch_grad_cam_formulas(rng, model):
    """Softmax GAP head: dS_t/dF[y,x] = Wd (s_t (e_t - s)) / (h w) in closed form (float64)."""
    f = rng.uniform(-1, 1, size=(4, 5, K)).astype(np.float32)
    F = f.astype(np.float64)
    t = 2
    s = model.np("head")(F)
    g = np.broadcast_to(model.Wd.astype(np.float64) @ (s[t] * (np.eye(C)[t] - s)) / 20, F.shape)
    relu = lambda x: np.maximum(x, 0)  # noqa: E731
    # Grad-CAM++ (pytorch-grad-cam): aij = g^2 / (2 g^2 + sum A * g^3 + eps), 0 where g == 0
    aij = g**2 / (2 * g**2 + F.sum((0, 1)) * g**3 + 1e-6)
    plus = relu(np.einsum("hwk,k->hw", F, np.sum(relu(g) * aij, (0, 1))))
    xgrad = relu(np.einsum("hwk,k->hw", F, np.sum(g * F, (0, 1)) / (F.sum((0, 1)) + 1e-7)))
    layer = relu(np.sum(relu(g) * F, -1))
    for fn, ref in [(gradcam_plus_plus, plus), (xgradcam, xgrad), (layercam, layer)]:
        np.testing.assert_allclose(fn(model.head, f, t), ref, rtol=1e-4, atol=1e-7, err_msg=fn.__name__)


def test_ablationcam_equals_brute_force_channel_ablation(rng, model):
    f = rng.uniform(-1, 1, size=(4, 5, K)).astype(np.float32)
    F = f.astype(np.float64)
    head = model.np("head")
    y = head(F)[0]
    wts = np.array([(y - head(F * (np.arange(K) != k))[0]) / y for k in range(K)])
    ref = np.maximum(np.einsum("hwk,k->hw", F, wts), 0)
    for bs in (None, 4):
        np.testing.assert_allclose(ablationcam(model.head, f, 0, batch_size=bs), ref, rtol=1e-4, atol=1e-6)


def pil_bilinear(a, shape):
    """Half-pixel bilinear upsampling by PIL (float mode), an independent reference."""
    return np.asarray(Image.fromarray(np.asarray(a, np.float32), mode="F").resize(
        (shape[1], shape[0]), Image.BILINEAR), np.float64)


def test_scorecam_matches_numpy(rng, model):
    x = rng.uniform(0, 1, size=(H, W, 3)).astype(np.float32)
    f = rng.normal(size=(4, 5, K)).astype(np.float32)
    scores = model.np("scores")
    t = 1
    out = []
    for k in range(K):
        m = pil_bilinear(f[..., k], (H, W))
        m = (m - m.min()) / (m.max() - m.min() + 1e-8)
        out.append(scores(x * m[..., None])[t])
    wts = softmax64(np.array(out))
    ref = np.maximum(np.einsum("hwk,k->hw", f.astype(np.float64), wts), 0)
    np.testing.assert_allclose(scorecam(model.scores, x, f, t, batch_size=4), ref, rtol=1e-4, atol=1e-6)


def test_eigencam_is_first_principal_component(rng):
    f = rng.normal(size=(6, 7, 5)).astype(np.float32) + rng.normal(size=(6, 7, 1)).astype(np.float32) * 3
    x = f.reshape(-1, 5).astype(np.float64)
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    v = vt[0] * (1 if vt[0].sum() >= 0 else -1)
    ref = np.maximum(x @ v, 0).reshape(6, 7)
    np.testing.assert_allclose(eigencam(f), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("border", ["clip", "shift"])
def test_occlusion_equals_numpy_window_loop(rng, model, border):
    x = rng.uniform(0, 1, size=(H, W, 3)).astype(np.float32)
    scores = model.np("scores")
    win, stride, t = 6, 4, 0
    ys, xs = window_starts(H, win, stride, border), window_starts(W, win, stride, border)
    if border == "shift":   # a last full window flush with the far border
        assert ys == [0, 4, 8, 10] and xs == [0, 4, 8, 12, 14]
    else:                   # Captum's windows: multiples of the stride, the last one clipped
        assert ys == [0, 4, 8, 12] and xs == [0, 4, 8, 12, 16]
    total, count = np.zeros((H, W)), np.zeros((H, W))
    base = scores(x)[t]
    for y0 in ys:
        for x0 in xs:
            occluded = x.astype(np.float64).copy()
            occluded[y0:y0 + win, x0:x0 + win] = 0.5
            total[y0:y0 + win, x0:x0 + win] += base - scores(occluded)[t]
            count[y0:y0 + win, x0:x0 + win] += 1
    got = occlusion(model.scores, x, t, window=win, stride=stride, value=0.5, batch_size=7,
                    border=border)
    assert count.min() >= 1
    np.testing.assert_allclose(got, total / count, rtol=1e-4, atol=1e-6)


GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "captum_occlusion.npz")


def test_occlusion_equals_captum_golden():
    """Captum 0.9's `Occlusion` on a seeded model (scripts/make_captum_golden.py), rebuilt in JAX."""
    golden = np.load(GOLDEN)
    cases = sorted({k.split("/")[0] for k in golden.files if "/" in k})
    assert {"h21w30_win6_s4", "h16w16_win5_s3", "h16w24_win8_s8"} <= set(cases)
    for name in cases:
        g = {k.split("/")[1]: golden[k] for k in golden.files if k.startswith(name + "/")}
        h, w = g["x"].shape[:2]

        def scores(x, g=g, h=h, w=w):
            u = jnp.tanh(x @ g["A"] + g["a"]) @ g["Wd"]
            return jax.nn.softmax(jnp.einsum("hwc,hw->c", u, g["M"]) / (h * w) + g["b"])

        opts = dict(window=int(g["window"]), stride=int(g["stride"]), value=float(g["value"]),
                    batch_size=None)
        both = jax.jit(lambda x, opts=opts, scores=scores, t=int(g["target"]): [
            occlusion(scores, x, t, border=b, **opts) for b in ("clip", "shift")])
        got, other = both(g["x"])
        ref = g["attribution"]
        np.testing.assert_allclose(got, ref, rtol=0, atol=5e-4 * np.abs(ref).max(), err_msg=name)
        if h % opts["stride"] or w % opts["stride"]:   # the "shift" variant is a different map there
            assert np.abs(other - ref).max() > 0.05 * np.abs(ref).max(), name


def test_integrated_gradients_completeness(rng, model):
    x = rng.uniform(0, 1, size=(H, W, 3)).astype(np.float32)
    baseline = rng.uniform(0, 0.2, size=(H, W, 3)).astype(np.float32)
    ig = integrated_gradients(model.scores, x, 2, baseline=baseline, steps=16, batch_size=8)
    assert ig.shape == (H, W)
    scores = model.np("scores")
    gap = scores(x)[2] - scores(baseline)[2]
    np.testing.assert_allclose(float(jnp.sum(ig)), gap, rtol=1e-3, atol=1e-6)


def test_registry_one_signature_jit_vmap(rng, model):
    m = model.explainable()
    xs = rng.uniform(0, 1, size=(2, H, W, 3)).astype(np.float32)
    expected = {"occlusion": (H, W), "integrated_gradients": (H, W)}
    names = ["cam", "crm", "crm_linear", "gradcam", "gradcam++", "hirescam", "xgradcam", "layercam",
             "scorecam", "ablationcam", "eigencam", "occlusion", "integrated_gradients"]
    assert set(names) <= set(REGISTRY)
    all_maps = lambda x: {name: explain(name, m, x) for name in names}  # noqa: E731
    batched = jax.jit(jax.vmap(all_maps))(xs)                     # one compile for all methods
    single = jax.jit(all_maps)(xs[1])
    for name in names:
        assert batched[name].shape == (2,) + expected.get(name, (4, 5)), name
        assert np.all(np.isfinite(batched[name])), name
        np.testing.assert_allclose(batched[name][1], single[name], rtol=1e-4, atol=1e-6, err_msg=name)
    # the default target is the predicted class; CAM of it equals the CAM column
    pred = int(np.argmax(model.np("scores")(xs[0])))
    np.testing.assert_allclose(explain("cam", m, xs[0]),
                               cam(model.features(xs[0]), model.Wd)[..., pred], rtol=1e-5, atol=1e-6)
    # CRM dispatch: the pooled fast path equals the generic path and the NLM preset is sum CAM^2
    generic = ExplainableModel(features=m.features, head=m.head, scores=m.scores)
    np.testing.assert_allclose(explain("crm", generic, xs[0], batch_size=3), explain("crm", m, xs[0]),
                               rtol=1e-3, atol=1e-9)
    feats = np.asarray(model.features(xs[0]), np.float64)
    np.testing.assert_allclose(explain("crm", m, xs[0], score_space="nlm"),
                               np.sum((feats @ model.Wd.astype(np.float64)) ** 2, -1), rtol=1e-4)
    # paper B's Eq. (1) space: the bias-free linear scores of the GAP, ablated location by location
    n = feats.shape[0] * feats.shape[1]
    linear = lambda f: f.mean((0, 1)) @ model.Wd.astype(np.float64)  # noqa: E731
    ref = np.array([[np.sum((linear(feats) - linear(np.where(
        (np.arange(feats.shape[0])[:, None, None] == y) & (np.arange(feats.shape[1])[None, :, None] == x),
        0.0, feats))) ** 2) for x in range(feats.shape[1])] for y in range(feats.shape[0])])
    np.testing.assert_allclose(explain("crm_linear", m, xs[0]), ref, rtol=1e-4, atol=1e-12 / n)
    with pytest.raises(ValueError, match="kernel"):
        explain("crm_linear", model.explainable(kernel=False), xs[0])
    with pytest.raises(ValueError, match="unknown method"):
        explain("gradcam2", m, xs[0])
    with pytest.raises(ValueError, match="kernel"):
        explain("cam", model.explainable(kernel=False), xs[0])
