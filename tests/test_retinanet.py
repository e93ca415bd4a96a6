"""RetinaNet subnets and trainable BatchNorm against NumPy float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_resnet_fpn import np_conv, np_resnet_fpn, randomize, tf_same

from cervix_jax import detection as det
from cervix_jax.models import retinanet


def random_variables(module, x, seed):
    """Variables of `module` filled with NumPy draws (no jitted init: threefry compiles slowly on CPU):
    kernels N(0, 1/fan_in), then `randomize` (BatchNorm statistics, scales, biases)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    fill = lambda s: rng.normal(0, 1 / np.sqrt(np.prod(s.shape[:-1])), s.shape) if len(s.shape) > 1 \
        else np.zeros(s.shape)
    return randomize(jax.tree.map(lambda s: jnp.asarray(fill(s), jnp.float32), shapes), seed + 1)


def np_group_norm(x, p, groups=32, eps=1e-5):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean((1, 2, 4), keepdims=True)
    var = g.var((1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * p["scale"] + p["bias"]


def np_subnet(p, prefix, levels, depth, k, group):
    three = ((1, 1), (1, 1))
    out = []
    for x in levels:
        for i in range(depth):
            x = np_conv(x, p[f"{prefix}_{i}"], 1, three)
            x = np.maximum(np_group_norm(x, p[f"{prefix}_{i}_norm"]) if group else x, 0)
        y = np_conv(x, p[prefix], 1, three)
        out.append(y.reshape(y.shape[0], -1, k))
    return np.concatenate(out, 1)


@pytest.mark.parametrize("head_norm,hw", [("none", (66, 100)), ("group", (64, 96))])
def test_tiny_retinanet_heads_against_numpy(seed, head_norm, hw):
    width = 32 if head_norm == "group" else 8
    m = retinanet._RetinaNetTiny(head_norm=head_norm, head_width=width, head_depth=2, num_classes=3)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, *hw, 3)).astype(np.float32)
    variables = random_variables(m, x[:1], seed)
    with jax.default_matmul_precision("highest"):
        got = jax.jit(m.apply)(variables, x)
    v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    ref = np_resnet_fpn(v64, x.astype(np.float64), m)
    levels = [ref[f"P{i}"] for i in range(3, 8)]
    P = v64["params"]
    for key, sub, prefix, k in (("cls_logits", "classification_submodel", "pyramid_classification", 3),
                                ("box_deltas", "regression_submodel", "pyramid_regression", 4)):
        r = np_subnet(P[sub], prefix, levels, 2, k, head_norm == "group")
        assert got[key].shape == r.shape == (2, det.num_anchors(hw), k)
        np.testing.assert_allclose(got[key], r, rtol=1e-4, atol=1e-4 * np.abs(r).max(), err_msg=key)


def test_head_init_prior_probability():
    """The subnets' own initialisation (the backbone's is Flax's default): class bias -log(99), kernels
    N(0, 0.01), other biases 0."""
    levels = [jnp.zeros((1, 4, 6, 32)), jnp.zeros((1, 2, 3, 32))]
    cls = retinanet.Subnet("pyramid_classification", num_anchors=9, outputs_per_anchor=2, width=32, depth=1,
                           final_bias=-np.log(99.0))
    v = cls.init(jax.random.PRNGKey(0), levels)["params"]
    np.testing.assert_allclose(jax.nn.sigmoid(v["pyramid_classification"]["bias"]), 0.01, rtol=1e-5)
    assert 0.008 < float(jnp.std(v["pyramid_classification_0"]["kernel"])) < 0.012
    assert float(jnp.abs(v["pyramid_classification_0"]["bias"]).max()) == 0.0
    m = retinanet._RetinaNetTiny()
    shapes = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    assert set(retinanet.backbone_variables(shapes)["params"]) == {"backbone", "fpn"}
    assert m.prior_probability == 0.01


def test_batchnorm_trains_and_syncs_over_the_data_axis(seed):
    """Two "devices" of one image each (vmap with the axis name): the running statistics move by the
    statistics of BOTH images (NumPy), identically on both devices."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, 32, 48, 3)).astype(np.float32)
    m = retinanet._RetinaNetTiny(bn_axis_name="batch")
    variables = random_variables(m, x[:1], seed)
    with jax.default_matmul_precision("highest"):
        step = jax.jit(jax.vmap(lambda v, a: m.apply(v, a, train=True, mutable=["batch_stats"]),
                                in_axes=(None, 0), axis_name="batch"))
        _, upd = step(variables, x[:, None])
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
    pad = (tf_same(32, 7, 2), tf_same(48, 7, 2))
    y = np_conv(x.astype(np.float64), p["params"]["backbone"]["conv1"], 2, pad)
    old = p["batch_stats"]["backbone"]["bn_conv1"]
    new = upd["batch_stats"]["backbone"]["bn_conv1"]
    for stat, batch_value in (("mean", y.mean((0, 1, 2))), ("var", y.var((0, 1, 2)))):
        for device in range(2):
            np.testing.assert_allclose(new[stat][device], 0.9 * old[stat] + 0.1 * batch_value,
                                       rtol=1e-4, atol=1e-5)
    deep = upd["batch_stats"]["backbone"]["res5a"]["bn_branch2c"]["mean"]
    np.testing.assert_array_equal(deep[0], deep[1])
    deep_old = p["batch_stats"]["backbone"]["res5a"]["bn_branch2c"]["mean"]
    assert np.abs(np.asarray(deep[0]) - deep_old).max() > 1e-3
