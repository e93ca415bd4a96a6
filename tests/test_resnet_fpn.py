"""ResNet + FPN against an independent NumPy float64 implementation (tiny variant, every style/stem)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cervix_jax.models import fpn


def np_conv(x, p, stride, pad):
    """x [N,H,W,C], kernel HWIO; pad ((top, bottom), (left, right)) with zeros."""
    k = p["kernel"].astype(np.float64)
    x = np.pad(x, ((0, 0), *pad, (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(x, k.shape[:2], axis=(1, 2))[:, ::stride, ::stride]
    y = np.einsum("nijchw,hwco->nijo", win, k)
    return y + p["bias"] if "bias" in p else y


def tf_same(n, k, s):
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return (total // 2, total - total // 2)


def np_bn(x, p, s, eps):
    return (x - s["mean"]) / np.sqrt(s["var"] + eps) * p["scale"] + p["bias"]


def np_resnet_fpn(v, x, m: fpn.ResNetFPN):
    relu = lambda a: np.maximum(a, 0)
    P, S = v["params"]["backbone"], v["batch_stats"]["backbone"]
    if m.stem == "same":
        pad = (tf_same(x.shape[1], 7, 2), tf_same(x.shape[2], 7, 2))
    else:
        pad = ((3, 3), (3, 3))
    y = relu(np_bn(np_conv(x, P["conv1"], 2, pad), P["bn_conv1"], S["bn_conv1"], m.bn_eps))
    ppad = (((1, 1), (1, 1)) if m.stem == "symmetric"
            else (tf_same(y.shape[1], 3, 2), tf_same(y.shape[2], 3, 2)))
    y = np.pad(y, ((0, 0), *ppad, (0, 0)), constant_values=-np.inf)
    y = np.lib.stride_tricks.sliding_window_view(y, (3, 3), axis=(1, 2))[:, ::2, ::2].max((-1, -2))
    c = {}
    for stage in range(2, 6):
        name = f"res{stage}a"
        p, s = P[name], S[name]
        stride = 1 if stage == 2 else 2
        sa, sb = (stride, 1) if m.style == "caffe" else (1, stride)
        def conv_bn(x, branch, stride_, pad_):
            return np_bn(np_conv(x, p[branch], stride_, pad_), p[f"bn_{branch}"], s[f"bn_{branch}"], m.bn_eps)

        z = relu(conv_bn(y, "branch2a", sa, ((0, 0), (0, 0))))
        z = relu(conv_bn(z, "branch2b", sb, ((1, 1), (1, 1))))
        z = conv_bn(z, "branch2c", 1, ((0, 0), (0, 0)))
        sc = conv_bn(y, "branch1", stride, ((0, 0), (0, 0)))
        y = c[f"C{stage}"] = relu(z + sc)
    F = v["params"]["fpn"]
    up = lambda a, ref: a[:, [i * a.shape[1] // ref.shape[1] for i in range(ref.shape[1])]][
        :, :, [j * a.shape[2] // ref.shape[2] for j in range(ref.shape[2])]]
    one, three = ((0, 0), (0, 0)), ((1, 1), (1, 1))
    c5r = np_conv(c["C5"], F["C5_reduced"], 1, one)
    p4m = np_conv(c["C4"], F["C4_reduced"], 1, one) + up(c5r, c["C4"])
    p3m = np_conv(c["C3"], F["C3_reduced"], 1, one) + up(p4m, c["C3"])
    out = {"P3": np_conv(p3m, F["P3"], 1, three), "P4": np_conv(p4m, F["P4"], 1, three),
           "P5": np_conv(c5r, F["P5"], 1, three)}
    s2 = lambda a: (three if m.style == "torchvision"
                    else (tf_same(a.shape[1], 3, 2), tf_same(a.shape[2], 3, 2)))
    src = c["C5"] if m.p6_from == "C5" else out["P5"]
    out["P6"] = np_conv(src, F["P6"], 2, s2(src))
    out["P7"] = np_conv(relu(out["P6"]), F["P7"], 2, s2(out["P6"]))
    return {**c, **out}


def randomize(variables, seed):
    """Random BN statistics and biases (init gives mean 0, var 1, bias 0: BN would be the identity)."""
    leaves, treedef = jax.tree.flatten_with_path(variables)
    rng = np.random.default_rng(seed)
    new = []
    for path, x in leaves:
        name = path[-1].key
        if name == "var":
            new.append(rng.uniform(0.5, 2.0, x.shape))
        elif name in ("mean", "bias"):
            new.append(rng.normal(0, 0.2, x.shape))
        elif name == "scale":
            new.append(rng.uniform(0.5, 1.5, x.shape))
        else:
            new.append(np.asarray(x))
    return jax.tree.unflatten(treedef, [jnp.asarray(a, jnp.float32) for a in new])


@pytest.mark.parametrize("style,stem,p6_from,bn_eps,hw", [
    ("caffe", "same", "C5", 1e-5, (66, 100)),            # keras-retinanet, keras-resnet 0.2
    ("caffe", "pad3_same", "C5", 1e-5, (64, 96)),        # keras-resnet 0.1
    ("torchvision", "symmetric", "P5", 0.0, (66, 100)),  # torchvision v1 (COCO eps 0)
    ("torchvision", "symmetric", "C5", 1e-5, (64, 96)),  # torchvision v2
])
def test_tiny_resnet_fpn_against_numpy(style, stem, p6_from, bn_eps, hw):
    m = fpn._ResNetTinyFPN(style=style, stem=stem, p6_from=p6_from, bn_eps=bn_eps, conv_bias=True)
    x = np.random.default_rng(0).normal(size=(2, *hw, 3)).astype(np.float32)
    variables = randomize(m.init(jax.random.PRNGKey(1), x[:1]), 2)
    with jax.default_matmul_precision("highest"):
        got = jax.jit(m.apply)(variables, x)
    ref = np_resnet_fpn(jax.tree.map(lambda a: np.asarray(a, np.float64), variables), x.astype(np.float64), m)
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].shape == ref[k].shape, k
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-4, atol=1e-4 * np.abs(ref[k]).max(), err_msg=k)


@pytest.mark.parametrize("n_in,n_out", [(1, 7), (3, 5), (4, 13), (5, 9), (7, 100), (13, 26)])
def test_upsample_nearest_legacy_against_numpy(n_in, n_out):
    x = np.random.default_rng(n_in * n_out).normal(size=(2, n_in, n_in + 1, 3)).astype(np.float32)
    got = fpn.upsample_nearest_legacy(jnp.asarray(x), (n_out, n_out + 2))
    rows = np.floor(np.arange(n_out) * n_in / n_out).astype(int)
    cols = np.floor(np.arange(n_out + 2) * (n_in + 1) / (n_out + 2)).astype(int)
    np.testing.assert_array_equal(got, x[:, rows][:, :, cols])
    if n_out in (2 * n_in - 1, 2 * n_in):     # torchvision/keras's exact repeat-then-crop case
        np.testing.assert_array_equal(got[:, :, :1], np.repeat(x, 2, 1)[:, :n_out, :1])


def test_bfloat16_close_to_float32_and_bad_style():
    m32 = fpn._ResNetTinyFPN()
    x = np.random.default_rng(3).normal(size=(1, 64, 64, 3)).astype(np.float32)
    variables = randomize(m32.init(jax.random.PRNGKey(0), x), 4)
    a = jax.jit(m32.apply)(variables, x)["P3"]
    b = jax.jit(fpn._ResNetTinyFPN(dtype=jnp.bfloat16).apply)(variables, x)["P3"]
    assert b.dtype == jnp.bfloat16
    assert np.abs(np.asarray(b, np.float32) - a).max() < 0.05 * np.abs(a).max()
    with pytest.raises(ValueError, match="ResNet.style: expected one of"):
        fpn._ResNetTinyFPN(style="keras").init(jax.random.PRNGKey(0), x)
