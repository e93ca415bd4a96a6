"""cervix_jax.regulator against NumPy float64 / scipy references on fresh random inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from cervix_jax import regulator as R

EPS_W, FLOOR = 1e-3, 0.25


def np_fit(w):
    """Weighted MLE in float64: positions (x = column, y = row)."""
    w = np.asarray(w, np.float64)
    ys, xs = np.mgrid[0:w.shape[0], 0:w.shape[1]]
    m = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    p = w.ravel()
    mu = (p[:, None] * m).sum(0) / p.sum()
    d = m - mu
    return mu, (p[:, None, None] * d[:, :, None] * d[:, None, :]).sum(0) / p.sum()


def np_minmax(x, eps=R.MINMAX_EPS):
    return (x - x.min()) / (x.max() - x.min() + eps)


def random_spd(rng):
    a = rng.normal(size=(2, 2))
    return a @ a.T + 0.5 * np.eye(2)


@pytest.mark.parametrize("shape", [(7, 11), (42, 42)])
def test_fit_gaussian_matches_numpy_weighted_mle(shape, rng):
    w = rng.uniform(0.01, 1.0, shape) ** 3          # skewed, so mu is off-centre
    mu, cov = R.fit_gaussian(jnp.asarray(w, jnp.float32))
    ref_mu, ref_cov = np_fit(w)
    np.testing.assert_allclose(mu, ref_mu, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-4, atol=1e-3)


def test_fit_gaussian_is_mle_not_unbiased(rng):
    w = rng.uniform(0.1, 1.0, (5, 6))
    _, cov = R.fit_gaussian(jnp.asarray(w, jnp.float32))
    _, ref = np_fit(w)
    unbiased = ref * w.sum() / (w.sum() - (w ** 2).sum() / w.sum())
    assert not np.allclose(cov, unbiased, rtol=1e-3)
    np.testing.assert_allclose(cov, ref, rtol=1e-4)


def test_gaussian_density_matches_scipy(rng):
    h, w = 9, 13
    mu = rng.uniform([0, 0], [w - 1, h - 1])
    cov = random_spd(rng) * 4
    got = R.gaussian_density(jnp.asarray(mu, jnp.float32), jnp.asarray(cov, jnp.float32), (h, w))
    ys, xs = np.mgrid[0:h, 0:w]
    ref = multivariate_normal(mean=mu, cov=cov).pdf(np.stack([xs, ys], -1))
    assert got.shape == (h, w)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-7)


def test_dissimilarity_matches_numpy(rng):
    a, s = rng.uniform(size=(2, 6, 8))
    got = R.dissimilarity(jnp.asarray(a, jnp.float32), jnp.asarray(s, jnp.float32))
    np.testing.assert_allclose(got, 1 - np_minmax(a) * np_minmax(s), rtol=1e-5, atol=1e-6)
    # a constant map gives no 0/0
    assert np.all(np.isfinite(R.dissimilarity(jnp.ones((3, 3)), jnp.asarray(s[:3, :3]))))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_spatial_loss_reduces_d_and_stops_gradient_at_the_regulator(reduction, rng):
    h, w = 6, 8
    a = rng.uniform(size=(h, w))
    mu = rng.uniform([1, 1], [w - 2, h - 2])
    cov = random_spd(rng) * 3
    ys, xs = np.mgrid[0:h, 0:w]
    s = multivariate_normal(mean=mu, cov=cov).pdf(np.stack([xs, ys], -1))
    d = 1 - np_minmax(a) * np_minmax(s)
    ref = d.sum() if reduction == "sum" else d.mean()      # Eqn. 5 sums over the patches
    args = [jnp.asarray(x, jnp.float32) for x in (a, mu, cov)]
    loss = lambda *x: R.spatial_loss(*x, reduction=reduction)
    np.testing.assert_allclose(loss(*args), ref, rtol=1e-5)
    ga, gmu, gcov = jax.grad(loss, argnums=(0, 1, 2))(*args)
    assert np.abs(ga).max() > 0
    assert np.all(gmu == 0) and np.all(gcov == 0)
    with pytest.raises(ValueError, match="spatial_reduction"):
        R.spatial_loss(*args, reduction="max")


def test_init_regulator_centre_and_half_size_stds():
    mu, cov = R.init_regulator((42, 30))
    np.testing.assert_allclose(mu, [14.5, 20.5])
    np.testing.assert_allclose(cov, np.diag([15.0 ** 2, 21.0 ** 2]))


def _prev(rng):
    return (jnp.asarray(rng.uniform(1, 3, 2), jnp.float32),
            jnp.asarray(random_spd(rng), jnp.float32))


def test_refit_valid_is_floored_weighted_mle(rng):
    w = rng.uniform(0.05, 1.0, (8, 10))
    mu, cov, valid = R.refit(*_prev(rng), jnp.asarray(w, jnp.float32), eps_w=EPS_W, eig_floor=FLOOR)
    ref_mu, ref_cov = np_fit(w)
    assert bool(valid)
    np.testing.assert_allclose(mu, ref_mu, rtol=1e-5)
    np.testing.assert_allclose(cov, ref_cov, rtol=1e-4)   # eigenvalues well above the floor


def test_refit_single_patch_gets_floored_eigenvalues(rng):
    w = np.zeros((6, 7))
    i, j = rng.integers(0, 6), rng.integers(0, 7)
    w[i, j] = rng.uniform(0.5, 1.0)
    mu, cov, valid = R.refit(*_prev(rng), jnp.asarray(w, jnp.float32), eps_w=EPS_W, eig_floor=FLOOR)
    assert bool(valid)
    np.testing.assert_allclose(mu, [j, i], atol=1e-5)
    np.testing.assert_allclose(cov, FLOOR * np.eye(2), atol=1e-6)


def _invalid_cases(rng):
    pos = rng.uniform(0.1, 1.0, (3, 3))
    small = pos / pos.sum() * EPS_W * 0.5                                    # sum below eps_w
    nan = pos.copy()
    nan[rng.integers(3), rng.integers(3)] = np.nan                           # not finite
    outside = np.array([[0.7, -0.8, 0.9], [-0.7, -0.7, 0.5], [0.9, -0.9, 0.6]])  # mu x = 3.2
    indefinite = np.array([[0.0, -0.4, 0.0], [1.0, 1.0, 1.0], [0.0, -0.4, 0.0]])  # var_y < 0
    return {"small_sum": small, "nan": nan, "outside": outside, "indefinite": indefinite}


@pytest.mark.parametrize("case", ["small_sum", "nan", "outside", "indefinite"])
def test_refit_invalid_keeps_previous(case, rng):
    w = _invalid_cases(rng)[case]
    prev_mu, prev_cov = _prev(rng)
    mu, cov, valid = jax.jit(lambda m, c, x: R.refit(m, c, x, eps_w=EPS_W, eig_floor=FLOOR))(
        prev_mu, prev_cov, jnp.asarray(w, jnp.float32))
    assert not bool(valid)
    np.testing.assert_array_equal(mu, prev_mu)
    np.testing.assert_array_equal(cov, prev_cov)
    # each case breaks exactly its own rule (the others hold), so the test pins that rule
    if case in ("outside", "indefinite"):
        ref_mu, ref_cov = np_fit(w)
        inside = -0.5 <= ref_mu[0] <= 2.5 and -0.5 <= ref_mu[1] <= 2.5
        psd = np.linalg.eigvalsh(ref_cov)[0] >= -FLOOR
        assert w.sum() > EPS_W and (inside != (case == "outside")) and (psd != (case == "indefinite"))


def test_refit_vmapped_mixes_valid_and_invalid_rows(rng):
    cases = _invalid_cases(rng)
    good = rng.uniform(0.1, 1.0, (3, 3))
    ws = jnp.asarray(np.stack([good, cases["outside"], good * 2, cases["small_sum"]]), jnp.float32)
    prev_mu = jnp.asarray(rng.uniform(0, 2, (4, 2)), jnp.float32)
    prev_cov = jnp.asarray(np.stack([random_spd(rng) for _ in range(4)]), jnp.float32)
    mu, cov, valid = jax.jit(jax.vmap(lambda m, c, x: R.refit(m, c, x, eps_w=EPS_W, eig_floor=FLOOR)))(
        prev_mu, prev_cov, ws)
    np.testing.assert_array_equal(valid, [True, False, True, False])
    np.testing.assert_array_equal(mu[1], prev_mu[1])
    np.testing.assert_array_equal(cov[3], prev_cov[3])
    np.testing.assert_allclose(mu[0], np_fit(good)[0], rtol=1e-5)
