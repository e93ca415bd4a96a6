"""Pyramid classifier, its Task, and the feature cache (heads from cache == heads on full maps)."""
import sys
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cervix_jax.models import pyramid
from cervix_jax.train import feature_cache, task_pyramid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "configs"))
import pyramid as pyramid_config  # noqa: E402  (configs/pyramid.py)

HW = (72, 104)          # P3 9x13, P4 5x7, P5 3x4, P6 2x2, P7 1x1: non-integer upsampling ratios


def tiny_task(levels, upsample="nearest_legacy"):
    config = pyramid_config.get_config(f"{levels},runlocal")
    config.model.upsample = upsample
    return task_pyramid.make(config.model)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    n = 6
    return {"image": rng.uniform(0, 1, (n, *HW, 3)).astype(np.float32),
            "label": rng.integers(0, 2, n).astype(np.int32), "weight": np.ones(n, np.float32),
            "id": np.arange(n, dtype=np.int32)}


@pytest.fixture(scope="module")
def frozen():
    return tiny_task("p3").init(jax.random.PRNGKey(100), (*HW, 3))["frozen"]


@pytest.fixture(scope="module")
def maps(frozen, data):
    return jax.jit(tiny_task("p3").pyramid_maps)(frozen, data["image"])


def test_config_variants_and_levels():
    c = pyramid_config.get_config("p3,p6,p7")
    assert c.model.levels == "p3,p6,p7" and c.train.lr == 1e-6 and c.data.image_size == 1200
    assert c.data.normalization == "unit" and c.model.backbone == "resnet50"
    assert pyramid.parse_levels(c.model.levels) == ("P3", "P6", "P7")
    assert pyramid.parse_levels("p3-p7") == pyramid.LEVELS
    assert pyramid.parse_levels("P7,p4") == ("P4", "P7")
    assert len(dict(c.sweep.grid)["model.levels"]) == 7
    assert pyramid_config.get_config("p5,runlocal").model.backbone == "tiny"
    for bad in ("p2", "p3,p3", ""):
        with pytest.raises(ValueError, match="levels: expected a non-empty subset"):
            pyramid.parse_levels(bad)


@pytest.mark.parametrize("method", ["nearest_legacy", "bilinear"])
def test_concat_levels_against_numpy(maps, method):
    levels = ("P3", "P5", "P7")
    got = np.asarray(pyramid.concat_levels(maps, levels, method), np.float64)
    th, tw = maps["P3"].shape[1:3]
    parts = [np.asarray(maps["P3"], np.float64)]
    for lvl in levels[1:]:
        m = np.asarray(maps[lvl], np.float64)
        h, w = m.shape[1:3]
        if method == "nearest_legacy":
            parts.append(m[:, [i * h // th for i in range(th)]][:, :, [j * w // tw for j in range(tw)]])
        else:   # separable half-pixel bilinear with edge clamping (upsampling only)
            def interp(n_in, n_out):
                r = np.zeros((n_out, n_in))
                for i in range(n_out):
                    s = np.clip((i + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
                    a = int(np.floor(s))
                    b = min(a + 1, n_in - 1)
                    r[i, a] += 1 - (s - a)
                    r[i, b] += s - a
                return r
            parts.append(np.einsum("ia,jb,nabc->nijc", interp(h, th), interp(w, tw), m))
    np.testing.assert_allclose(got, np.concatenate(parts, -1), rtol=1e-5, atol=1e-5)


def test_task_loss_predict_and_explainable(frozen, data):
    task = tiny_task("p3,p6,p7")
    params = task.init(jax.random.PRNGKey(1), (*HW, 3))["params"]
    jax.tree.map(np.testing.assert_array_equal, params, task.init_params(jax.random.PRNGKey(1)))
    assert params["classifier"]["kernel"].shape == (3 * 8, 2)
    batch = {k: jnp.asarray(v) for k, v in data.items()}
    batch["weight"] = batch["weight"].at[-1].set(0.0)           # padding row ignored
    loss, aux = jax.jit(task.loss)(params, frozen, batch, None, jax.random.PRNGKey(0))
    probs = np.asarray(jax.jit(task.predict)(params, frozen, batch), np.float64)
    y, w = data["label"], np.asarray(batch["weight"])
    ref = -(w * np.log(np.where(y == 1, probs, 1 - probs))).sum() / w.sum()
    np.testing.assert_allclose(loss, ref, rtol=1e-5)
    # No gradient reaches the backbone.
    g = jax.jit(jax.grad(lambda f: task.loss(params, f, batch, None, None)[0]))(frozen)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g))
    e = task.explainable({"params": params, "frozen": frozen})
    fmap = jax.jit(e.features)(batch["image"][0])
    assert fmap.shape == (9, 13, 24)
    np.testing.assert_allclose(jax.jit(e.head)(fmap)[1], probs[0], rtol=1e-5)
    np.testing.assert_allclose(e.post_pool(fmap.mean((0, 1))), jax.jit(e.head)(fmap), rtol=1e-6)
    np.testing.assert_array_equal(e.kernel, params["classifier"]["kernel"])


def test_pool_pyramid_is_gap_of_upsampled(maps):
    method = "nearest_legacy"
    pooled = jax.jit(lambda m: feature_cache.pool_pyramid(m, method))(maps)
    for levels in (("P3", "P6", "P7"), ("P4", "P5"), ("P6", "P7"), pyramid.LEVELS):
        full = pyramid.concat_levels(maps, levels, method).mean((1, 2))
        np.testing.assert_allclose(feature_cache.pooled_features(pooled, levels), full,
                                   rtol=1e-5, atol=1e-6)
    # Legacy-nearest weights are integer multiplicities / output size.
    w = feature_cache.axis_weights(4, 13, "nearest_legacy") * 13
    np.testing.assert_array_equal(w, [4, 3, 3, 3])
    with pytest.raises(ValueError, match="expected upsample 'nearest_legacy'"):
        feature_cache.pool_pyramid(maps, "bilinear")


def test_heads_from_cache_equal_heads_on_full_maps(frozen, data):
    """Same params after a few Adam steps: cache + vmapped train_heads vs the Task loss on images."""
    subsets, seeds, steps, lr = (("P3", "P6", "P7"), ("P4", "P5"), ("P7",)), (0, 3), 4, 1e-2
    task = tiny_task("p3")
    cache = feature_cache.extract(task, frozen, [{k: v[:4] for k, v in data.items()},
                                                 {k: v[4:] for k, v in data.items()}])
    np.testing.assert_array_equal(cache["id"], data["id"])
    heads = feature_cache.train_heads(cache, subsets, seeds, steps=steps, lr=lr)
    batch = {k: jnp.asarray(v) for k, v in data.items()}
    tx = optax.adam(lr)
    for levels in subsets:
        t = tiny_task(",".join(levels))
        grad = jax.jit(jax.grad(lambda p: t.loss(p, frozen, batch, None, None)[0]))
        for seed in seeds:
            params = t.init_params(jax.random.PRNGKey(seed))
            opt = tx.init(params)
            for _ in range(steps):
                updates, opt = tx.update(grad(params), opt, params)
                params = optax.apply_updates(params, updates)
            got = heads[(levels, seed)]["params"]
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, params)
            init = t.init_params(jax.random.PRNGKey(seed))["classifier"]["kernel"]
            assert np.abs(np.asarray(got["classifier"]["kernel"]) - np.asarray(init)).max() > 1e-3


def test_train_heads_minibatches_learn(frozen, data):
    task = tiny_task("p3")
    cache = feature_cache.extract(task, frozen, [data])
    subsets, seeds = [("P3",), ("P5",)], [0, 1, 2]
    heads = feature_cache.train_heads(cache, subsets, seeds, steps=30, lr=5e-2, batch_size=2)
    # lr 0: the initial heads, as train_heads makes them.
    inits = feature_cache.train_heads(cache, subsets, seeds, steps=1, optimizer=optax.sgd(0.0), batch_size=2)
    assert len(heads) == 6 and heads.keys() == inits.keys()

    def full_data_nll(params, levels):  # NumPy float64 reference of the weighted-mean cross-entropy
        x = np.asarray(feature_cache.pooled_features(cache["pooled"], levels), np.float64)
        head = params["classifier"]
        logits = x @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"])
        top = logits.max(1, keepdims=True)
        logp = logits - np.log(np.exp(logits - top).sum(1, keepdims=True)) - top
        return -logp[np.arange(len(x)), np.asarray(cache["label"])].mean()

    for key, h in heads.items():
        levels = key[0]
        assert h["loss"].shape == (30,)
        assert full_data_nll(h["params"], levels) < full_data_nll(inits[key]["params"], levels) - 1e-3


def _np_cell_fraction(valid, grid):
    """float64 reference of parts.valid_fraction: each pixel split into grid[0] x grid[1] sub-pixels,
    cell (i, j) = sub-pixels [i H, (i+1) H) x [j W, (j+1) W), mean of valid there."""
    n, h_in, w_in = valid.shape
    sub = np.repeat(np.repeat(valid.astype(np.float64), grid[0], 1), grid[1], 2)
    return sub.reshape(n, grid[0], h_in, grid[1], w_in).mean((2, 4))


def test_masked_gap_over_valid_region_in_task_explainable_and_cache(frozen, data, maps, rng):
    """Images smaller than pad_to: predict, the explainable head and the feature cache all pool over
    the image region only (issue 15, padding), against a NumPy float64 reference."""
    n = len(data["id"])
    valid = np.zeros((n, *HW), np.uint8)
    for i in range(n):
        h, w = (HW[0], HW[1]) if i == 0 else (rng.integers(20, HW[0]), rng.integers(20, HW[1]))
        valid[i, :h, :w] = 1
    batch = {**{k: jnp.asarray(v) for k, v in data.items()}, "valid": jnp.asarray(valid)}
    cache = feature_cache.extract(tiny_task("p3"), frozen, [{**data, "valid": valid}])
    for levels in (("P3", "P6", "P7"), ("P4", "P5")):
        fmap = np.asarray(pyramid.concat_levels(maps, levels), np.float64)
        cell = _np_cell_fraction(valid, fmap.shape[1:3])
        pooled = np.einsum("nhwk,nhw->nk", fmap, cell) / cell.sum((1, 2))[:, None]
        # the exact cached-feature path agrees with the masked GAP of the full maps
        np.testing.assert_allclose(feature_cache.pooled_features(cache["pooled"], levels), pooled,
                                   rtol=1e-4, atol=1e-5)
    task = tiny_task("p3,p6,p7")
    params = task.init_params(jax.random.PRNGKey(rng.integers(1 << 30)))
    k, b = (np.asarray(params["classifier"][x], np.float64) for x in ("kernel", "bias"))
    fmap = np.asarray(pyramid.concat_levels(maps, ("P3", "P6", "P7")), np.float64)
    cell = _np_cell_fraction(valid, fmap.shape[1:3])
    pooled_ref = np.einsum("nhwk,nhw->nk", fmap, cell) / cell.sum((1, 2))[:, None]
    logits = pooled_ref @ k + b
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    got = np.asarray(jax.jit(task.predict)(params, frozen, batch), np.float64)
    np.testing.assert_allclose(got, probs[:, 1], rtol=1e-5, atol=1e-6)
    assert np.abs(pooled_ref - fmap.mean((1, 2))).max() > 1e-3     # the plain mean would not pass
    # the explainable view of a padded image: same scores, pooling weights for CRM's fast path
    e = task.explainable({"params": params, "frozen": frozen}).for_valid(batch["valid"][1])
    f = jax.jit(e.features)(batch["image"][1])
    np.testing.assert_allclose(e.head(f)[1], probs[1, 1], rtol=1e-5)
    np.testing.assert_allclose(e.pool_weights, cell[1] / cell[1].sum(), rtol=1e-5, atol=1e-7)
