"""CAM and CRM against NumPy float64 brute force on fresh random maps and heads."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cervix_jax.explain import cam, crm, crm_linear, crm_nlm, crm_pooled


def softmax64(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def brute_force_crm(head64, features):
    """M(y, x) = sum_c (s_c - s_c(y, x))^2 by zeroing each location, float64."""
    f = features.astype(np.float64)
    h, w, _ = f.shape
    s = head64(f)
    m = np.empty((h, w))
    for y in range(h):
        for x in range(w):
            g = f.copy()
            g[y, x] = 0
            m[y, x] = np.sum((s - head64(g)) ** 2)
    return m


def pooled_brute_force(post64, features):
    """Same, for a head post64(mean), using the exact ablated sum (fast enough for big maps)."""
    f = features.astype(np.float64).reshape(-1, features.shape[-1])
    n = f.shape[0]
    s = post64(f.mean(0))
    ablated = np.stack([post64((f.sum(0) - f[i]) / n) for i in range(n)])
    return np.sum((s - ablated) ** 2, axis=-1).reshape(features.shape[:2])


def rel_err(got, ref):
    return np.max(np.abs(np.asarray(got, np.float64) - ref)) / np.max(np.abs(ref))


def random_heads(rng, k, c=2, hidden=32):
    """(jax post-pool fn, float64 NumPy twin) pairs: dense+softmax, 2-layer tanh MLP, ReLU MLP."""
    w = (rng.normal(size=(k, c)) / np.sqrt(k)).astype(np.float32)  # unsaturated softmax
    b = rng.normal(size=c).astype(np.float32)
    w1 = (rng.normal(size=(k, hidden)) / np.sqrt(k) * 2).astype(np.float32)
    b1 = rng.normal(size=hidden).astype(np.float32)
    w2 = (rng.normal(size=(hidden, c)) / np.sqrt(hidden)).astype(np.float32)
    b2 = rng.normal(size=c).astype(np.float32)
    W, W1, W2 = w.astype(np.float64), w1.astype(np.float64), w2.astype(np.float64)
    return {
        "dense_softmax": (lambda p: jax.nn.softmax(p @ w + b), lambda p: softmax64(p @ W + b)),
        "mlp_tanh": (lambda p: jnp.tanh(p @ w1 + b1) @ w2 + b2,
                     lambda p: np.tanh(p @ W1 + b1) @ W2 + b2),
        "mlp_relu": (lambda p: jax.nn.relu(p @ w1 + b1) @ w2 + b2,
                     lambda p: np.maximum(p @ W1 + b1, 0) @ W2 + b2),
    }


def test_cam_matches_numpy(rng):
    f = rng.normal(size=(5, 7, 6)).astype(np.float32)
    k = rng.normal(size=(6, 3)).astype(np.float32)
    ref = np.einsum("hwk,kc->hwc", f.astype(np.float64), k.astype(np.float64))
    np.testing.assert_allclose(cam(f, k), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="kernel must be"):
        cam(f, k.T)


# Tolerances from the error distribution over 200 seeds per shape (max error / max of the map):
#   24x36x64: dense+softmax median 4e-7, max 4.8e-5 (a saturated softmax, map max ~1e-10); tanh MLP
#             median 6e-7, max 1.5e-4 (an ill-conditioned head: its float32 forward error is 3e-7 on a
#             score difference of 3e-3); ReLU MLP max 1.3e-3 (ablations whose shift crosses a kink);
#   3x4x16:   dense max 6.2e-5, tanh 1.0e-5, ReLU 1.1e-5;
#   elementwise where the map is above 1e-3 of its max: smooth heads max 2.0e-4, ReLU 8.0e-3.
# Each bound is ~3x its measured maximum. The plain float32 difference is ~500x worse than Simpson on
# the same maps (median; at least 138x for the dense head): `test_plain_difference_would_fail`.
GLOBAL_TOL = {"dense_softmax": 2e-4, "mlp_tanh": 5e-4, "mlp_relu": 5e-3}
ELEMENT_TOL = {"dense_softmax": 1e-3, "mlp_tanh": 1e-3, "mlp_relu": 5e-2}


@pytest.mark.parametrize("shape", [(24, 36, 64), (3, 4, 16)])
def test_crm_pooled_float32_vs_float64(rng, shape):
    """Simpson on jvps against the float64 exact ablation, big and tiny maps (tiny: d ~ p / 12 and a
    saturated softmax)."""
    f = rng.uniform(0, 2, size=shape).astype(np.float32)
    for name, (post, post64) in random_heads(rng, shape[-1]).items():
        ref = pooled_brute_force(post64, f)
        got = np.asarray(jax.jit(lambda x: crm_pooled(post, x))(f))
        assert rel_err(got, ref) <= GLOBAL_TOL[name], name
        big = ref > 1e-3 * ref.max()
        np.testing.assert_allclose(got[big], ref[big], rtol=ELEMENT_TOL[name], err_msg=name)


def test_plain_difference_would_fail(rng):
    """The naive float32 difference of scores is far worse than Simpson on the same map (measured over
    200 seeds: 138x to 4,000x, median 500x, for the dense+softmax head), so the test above can fail."""
    f = rng.uniform(0, 2, size=(24, 36, 64)).astype(np.float32)
    post, post64 = random_heads(rng, 64)["dense_softmax"]
    p = f.reshape(-1, 64).mean(0)
    ablated = np.asarray(jax.vmap(post)(p - f.reshape(-1, 64) / f[..., 0].size))
    naive = np.sum((np.asarray(post(p)) - ablated) ** 2, -1)
    ref = pooled_brute_force(post64, f)
    simpson = np.asarray(jax.jit(lambda x: crm_pooled(post, x))(f))
    assert rel_err(naive.reshape(24, 36), ref) > 30 * rel_err(simpson, ref)


@pytest.mark.parametrize("batch_size", [None, 10])
def test_crm_generic_equals_pooled_and_brute_force(rng, batch_size):
    f = rng.uniform(0, 2, size=(7, 9, 12)).astype(np.float32)       # 63 locations: a remainder chunk
    for name, (post, post64) in random_heads(rng, 12, c=3).items():
        got = crm(lambda x: post(x.mean((0, 1))), f, batch_size=batch_size)
        ref = brute_force_crm(lambda x: post64(x.mean((0, 1))), f)
        # the generic path differences scores plainly: relative error ~ eps * H * W
        assert rel_err(got, ref) < 3e-3, name
        assert rel_err(got, np.asarray(crm_pooled(post, f), np.float64)) < 3e-3, name


def test_crm_generic_non_pooled_head(rng):
    """A head with a spatial weighting between the map and the pooling (no fast path)."""
    f = rng.normal(size=(5, 6, 8)).astype(np.float32)
    spatial = rng.uniform(size=(5, 6, 1)).astype(np.float32)
    w = rng.normal(size=(8, 3)).astype(np.float32)
    head = lambda x: jax.nn.softmax(jnp.mean(jnp.tanh(x) * spatial, (0, 1)) @ w)  # noqa: E731
    head64 = lambda x: softmax64(np.mean(np.tanh(x) * spatial, (0, 1)) @ w.astype(np.float64))  # noqa: E731
    ref = brute_force_crm(head64, f)
    for bs in (None, 7):
        assert rel_err(crm(head, f, batch_size=bs), ref) < 3e-3


def test_crm_nlm_is_sum_of_squared_cams(rng):
    """The NLM Keras recipe: bias-free dense scores of sum-pooled features, ablated by brute force."""
    f = rng.normal(size=(6, 5, 10)).astype(np.float32)
    k = rng.normal(size=(10, 2)).astype(np.float32)
    ref = brute_force_crm(lambda x: x.sum((0, 1)) @ k.astype(np.float64), f)
    assert rel_err(crm_nlm(f, k), ref) < 1e-5
    assert rel_err(crm(lambda x: x.sum((0, 1)) @ k, f), ref) < 1e-4


def test_crm_linear_is_eq1_ablated_by_brute_force(rng):
    """Paper B's Eq. (1) space: linear scores of the (weighted) pooled features, no bias, no softmax,
    ablated location by location in float64; uniform and padding-style pooling weights."""
    f = rng.normal(size=(5, 7, 9)).astype(np.float32)
    k = rng.normal(size=(9, 2)).astype(np.float32)
    k64 = k.astype(np.float64)
    valid = np.zeros((5, 7))
    valid[:4, :6] = rng.uniform(0.5, 1.0, size=(4, 6))      # a padded corner: weight 0
    p = valid / valid.sum()
    for weights in (None, p):
        pw = np.full((5, 7), 1 / 35) if weights is None else weights
        ref = brute_force_crm(lambda x: np.einsum("yx,yxk->k", pw, x) @ k64, f)
        got = crm_linear(f, k) if weights is None else crm_linear(f, k, weights.astype(np.float32))
        assert rel_err(got, ref) < 1e-5
    # without padding it is crm_nlm's map up to the constant 1 / (h w)^2
    assert rel_err(crm_linear(f, k) * 35 ** 2, np.asarray(crm_nlm(f, k), np.float64)) < 1e-5
    with pytest.raises(ValueError, match="pool_weights of shape"):
        crm_linear(f, k, np.ones((4, 7), np.float32))


def test_jit_vmap_grad_through_cam_and_crm(rng):
    b, h, w, k, c = 3, 4, 5, 6, 2
    f = rng.normal(size=(b, h, w, k)).astype(np.float32)
    kern = rng.normal(size=(k, c)).astype(np.float32)
    r = rng.normal(size=(b, h, w)).astype(np.float32)
    F, K, R = f.astype(np.float64), kern.astype(np.float64), r.astype(np.float64)
    n = h * w

    # CAM: loss = sum r * CAM_0 -> dL/dF = r w_0, dL/dK[:, 0] = sum r F.
    cam_loss = lambda ff, kk: jnp.sum(r * jax.vmap(cam, (0, None))(ff, kk)[..., 0])  # noqa: E731
    g_f, g_k = jax.jit(jax.grad(cam_loss, (0, 1)))(f, kern)
    np.testing.assert_allclose(g_f, R[..., None] * K[:, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_k[:, 0], np.einsum("bhw,bhwk->k", R, F), rtol=1e-4, atol=1e-4)

    # CRM of a linear head = sum_c CAM_c^2 / n^2 exactly; its gradient in float64 closed form.
    def crm_loss(ff, kk, bias):
        maps = jax.vmap(lambda x: crm_pooled(lambda p: p @ kk + bias, x))(ff)
        return jnp.sum(r * maps)
    bias = rng.normal(size=c).astype(np.float32)
    g_f, g_k = jax.jit(jax.grad(crm_loss, (0, 1)))(f, kern, bias)
    cams = np.einsum("bhwk,kc->bhwc", F, K)
    ref = 2 / n**2 * np.einsum("bhw,bhwk,bhwc->kc", R, F, cams)
    # float32 sums with cancellation: an entry near 0 needs an absolute tolerance (seed 527694841)
    np.testing.assert_allclose(g_k, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(g_f, 2 / n**2 * np.einsum("bhw,bhwc,kc->bhwk", R, cams, K),
                               rtol=1e-4, atol=1e-7)

    # Generic CRM of a softmax head: directional derivative vs central finite differences.
    def soft_loss(ff):
        maps = jax.vmap(lambda x: crm(lambda g: jax.nn.softmax(g.mean((0, 1)) @ kern + bias), x,
                                      batch_size=4))(ff)
        return jnp.sum(r * maps)
    v = rng.normal(size=f.shape).astype(np.float32)
    analytic = float(jnp.vdot(jax.jit(jax.grad(soft_loss))(f), v))
    eps = 1e-2
    fd = (float(soft_loss(f + eps * v)) - float(soft_loss(f - eps * v))) / (2 * eps)
    assert abs(analytic - fd) <= 2e-2 * abs(fd) + 1e-6


def test_crm_pooled_with_pooling_weights_equals_brute_force(rng):
    """GAP over the valid region of a padded image: crm_pooled(weights) vs zero-ablation in float64."""
    from cervix_jax.explain.crm import crm_pooled
    h, w, k, c = 5, 6, 4, 3
    f = rng.normal(size=(h, w, k)).astype(np.float32)
    weights = np.zeros((h, w))
    weights[:3, :4] = rng.uniform(0.2, 1.0, (3, 4))
    weights /= weights.sum()
    kern, bias = rng.normal(size=(k, c)), rng.normal(size=c)

    def g64(p):
        z = p @ kern + bias
        e = np.exp(z - z.max())
        return e / e.sum()

    def head64(x):
        return g64(np.einsum("hwk,hw->k", x, weights))

    s = head64(f.astype(np.float64))
    ref = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            a = f.astype(np.float64).copy()
            a[y, x] = 0
            ref[y, x] = np.sum((s - head64(a)) ** 2)
    post_pool = lambda p: jax.nn.softmax(p @ jnp.asarray(kern, jnp.float32) + jnp.asarray(bias, jnp.float32))  # noqa: E731
    got = np.asarray(crm_pooled(post_pool, jnp.asarray(f), jnp.asarray(weights, jnp.float32)))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * ref.max())
    assert np.all(got[3:] == 0) and np.all(got[:, 4:] == 0)          # padding cells: no relevance
