"""config.model.refit_weighting: the map paper A's iterative regulator is refit from.

The new regulator rows returned by `PatchTask.loss` are checked against a float64 NumPy reference
(weighted MLE of the raw or min-max normalised patch weights, eigenvalues floored, validity rules).
"""
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest

from cervix_jax.train import task_patch
from cervix_jax.train.config import base_config

P, H, W = 8, 32, 48            # 4 x 6 grid
EPS_W, EIG_FLOOR = 1e-3, 0.25


def _config(weighting):
    c = mlc.ConfigDict()
    c.data = mlc.ConfigDict({"pad_to": (H, W)})
    c.model = mlc.ConfigDict({"name": "patch", "patch_size": P, "aggregation": "normalized",
                              "mlp_hidden": (16, 8), "regulator": "iterative", "reg_lambda": 0.5,
                              "eps_w": EPS_W, "eig_floor": EIG_FLOOR, "refit_weighting": weighting})
    return c


def _np_refit(prev_mu, prev_cov, a, weighting):
    """float64 reference of refit(refit_weights(a)): (mu, cov, valid)."""
    a = np.asarray(a, np.float64)
    w = a if weighting == "raw" else (a - a.min()) / (a.max() - a.min() + 1e-6)
    gh, gw = w.shape
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    m = np.stack([cols, rows], -1).reshape(-1, 2).astype(np.float64)
    wf = w.reshape(-1)
    total = wf.sum()
    if not total > EPS_W:
        return prev_mu, prev_cov, False
    mu = wf @ m / total
    d = m - mu
    cov = (wf[:, None] * d).T @ d / total
    evals, evecs = np.linalg.eigh(cov)
    inside = -0.5 <= mu[0] <= gw - 0.5 and -0.5 <= mu[1] <= gh - 0.5
    if not (inside and evals[0] >= -EIG_FLOOR):
        return prev_mu, prev_cov, False
    return mu, (evecs * np.maximum(evals, EIG_FLOOR)) @ evecs.T, True


@pytest.fixture(scope="module")
def params():
    """One set of parameters for both weightings (the model does not depend on the knob)."""
    task = task_patch.make(_config("raw").model)
    return jax.jit(task.init, static_argnums=1)(jax.random.PRNGKey(1), (H, W, 3))["params"]


@pytest.mark.parametrize("weighting", ["raw", "minmax"])
def test_refit_rows_match_numpy_reference(weighting, params):
    rng = np.random.default_rng(0)
    task = task_patch.make(_config(weighting).model)
    b = 3
    batch = {"image": jnp.asarray(rng.uniform(0, 1, (b, H, W, 3)), jnp.float32),
             "label": jnp.asarray([0, 1, 1], jnp.int32), "id": jnp.arange(b, dtype=jnp.int32),
             "weight": jnp.ones(b, jnp.float32)}
    rows = task.init_example_state(b, (H, W, 3))
    _, aux = jax.jit(task.loss)(params, {}, batch, rows, None)
    _, a = jax.jit(task.forward)(params, batch["image"])
    for i in range(b):
        mu, cov, valid = _np_refit(np.asarray(rows["mu"][i], np.float64),
                                   np.asarray(rows["cov"][i], np.float64), a[i], weighting)
        assert valid
        np.testing.assert_allclose(aux["example_state"]["mu"][i], mu, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(aux["example_state"]["cov"][i], cov, rtol=1e-3, atol=1e-3)
    assert float(aux["metrics"]["refit_valid"]) == 1.0


def test_minmax_ignores_the_floor_and_a_flat_map_keeps_the_previous_regulator():
    # A floor of 0.5 everywhere plus one peak in the corner: raw weights fit near the grid centre,
    # min-max weights put the centre on the peak.
    a = np.full((4, 6), 0.5, np.float32)
    a[0, 5] = 0.9
    prev_mu, prev_cov = np.array([2.5, 1.5]), np.diag([9.0, 4.0])
    raw = task_patch.refit_weights(jnp.asarray(a), "raw")
    np.testing.assert_allclose(raw, a)
    mu_raw = _np_refit(prev_mu, prev_cov, np.asarray(raw), "raw")[0]
    mu_mm = _np_refit(prev_mu, prev_cov, a, "minmax")[0]
    assert np.linalg.norm(mu_raw - [2.5, 1.5]) < 0.5 and np.allclose(mu_mm, [5.0, 0.0], atol=1e-3)
    flat = jnp.full((4, 6), 0.5, jnp.float32)
    from cervix_jax import regulator
    mu, cov, valid = regulator.refit(jnp.asarray(prev_mu, jnp.float32), jnp.asarray(prev_cov, jnp.float32),
                                     task_patch.refit_weights(flat, "minmax"), eps_w=EPS_W,
                                     eig_floor=EIG_FLOOR)
    assert not bool(valid)
    np.testing.assert_allclose(mu, prev_mu)
    np.testing.assert_allclose(cov, prev_cov)


def test_default_and_validation():
    assert base_config("patch").model.refit_weighting == "raw"
    c = _config("raw")
    del c.model["refit_weighting"]                 # configs written before the key: raw
    assert task_patch.make(c.model).refit_weighting == "raw"
    with pytest.raises(ValueError, match="refit_weighting"):
        task_patch.make(_config("power").model)
