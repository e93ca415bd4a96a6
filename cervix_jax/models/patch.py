"""Paper A's patch-wise classifier (Zhang et al., AAAI-21): patch CNN, vmapped weight network,
weighted aggregation, MLP with a sigmoid output.

The module works on ONE image [H, W, 3] (batch with `jax.vmap` over `apply`). H and W must be
multiples of `patch_size`; the grid is (H // p, W // p). Patch-size variants keep the image near
1176 px (see `PATCH_VARIANTS`).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# Eqn. 4, f = (+)_j a_j g(x_j), with (+) "concatenation or average" in the paper:
#   "average"    f = (1 / P) sum_j a_j h_j   (the paper's average over the P patches; paper default)
#   "sum"        f = sum_j a_j h_j           (the plain weighted sum, = P x "average")
#   "normalized" f = sum_j a_j h_j / (sum_j a_j + eps)   (a weighted mean: blind to the weights' level)
#   "concat"     f = (a_j h_j)_j             (the paper's concatenation; P K inputs to the MLP)
AGGREGATIONS = ("average", "sum", "normalized", "concat")
WEIGHTED_MEAN_EPS = 1e-6

# Paper's Table 2 (0.5x, 1x, 2x, 4x of 28 px) -> (patch px, image side px, grid side). 1176 is not a
# multiple of 112, so the 4x variant resizes the image to 1120 (no crop, no padding).
PATCH_VARIANTS = {
    "ps14": (14, 1176, 84),
    "ps28": (28, 1176, 42),
    "ps56": (56, 1176, 21),
    "ps112": (112, 1120, 10),
}

glorot = nn.initializers.xavier_uniform()
Dense = functools.partial(nn.Dense, kernel_init=glorot)


def patchify(image: Array, patch_size: int) -> Array:
    """[H, W, C] -> [gh, gw, p, p, C] by a reshape and an axis swap (no gather, no loop)."""
    chex.assert_rank(image, 3)
    h, w, c = image.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"patchify: image {h}x{w} is not a multiple of patch_size {p}; set "
                         f"config.data.pad_to to a multiple of config.model.patch_size")
    x = image.reshape(h // p, p, w // p, p, c)
    return x.transpose(0, 2, 1, 3, 4)


CONV_IMPLS = ("auto", "xla", "im2col")


def conv_impl_for(impl: str) -> str:
    """"auto" -> "im2col" on the CPU backend (train steps 1.35x faster at 1176 px and ~1.2x at the demo's
    96 x 144 there, but 1.6x slower at 224 px with 28-px patches: docs/performance.md), "xla" elsewhere;
    else `impl` itself."""
    if impl not in CONV_IMPLS:
        raise ValueError(f"config.model.conv_impl: expected one of {CONV_IMPLS}, found {impl!r}")
    if impl == "auto":
        return "im2col" if jax.default_backend() == "cpu" else "xla"
    return impl


def conv3x3_same(x: Array, kernel: Array, bias: Array, impl: str) -> Array:
    """A 3x3 convolution with zero "SAME" padding and stride 1, [N, H, W, C] -> [N, H, W, F].

    "xla": `lax.conv_general_dilated`; "im2col": the nine shifted copies of the zero-padded input
    concatenated on the channel axis ([N, H, W, 9C]) times the kernel reshaped to [9C, F] (one matmul;
    its backward is two matmuls). The same function; kernel [3, 3, C, F] (HWIO), bias [F].
    """
    if impl == "xla":
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias
    if impl != "im2col":
        raise ValueError(f"conv3x3_same: impl expected 'xla' or 'im2col', found {impl!r}")
    _, h, w, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)
    return cols @ kernel.reshape(9 * c, kernel.shape[-1]) + bias


def max_pool2(x: Array) -> Array:
    """2x2 max-pooling, stride 2, "VALID" (odd trailing rows/columns dropped), [N, H, W, C] by a reshape
    and a max: the same values as `nn.max_pool(x, (2, 2), (2, 2))`, whose backward on CPU
    (select-and-scatter) costs more than the reshape's."""
    n, h, w, c = x.shape
    x = x[:, :2 * (h // 2), :2 * (w // 2)]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class Conv3x3(nn.Module):
    """`nn.Conv(features, (3, 3), padding="SAME")` with the same parameters ("kernel" [3, 3, C, F] glorot,
    "bias" [F] zeros, float32) computed by `conv3x3_same` (`impl`: see `conv_impl_for`)."""
    features: int
    impl: str = "auto"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", glorot, (3, 3, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        x, kernel, bias = (v.astype(self.dtype) for v in (x, kernel, bias))
        return conv3x3_same(x, kernel, bias, conv_impl_for(self.impl))


class PatchCNN(nn.Module):
    """Three 3x3 conv layers (12, 24, 48 filters), ReLU, 2x2 max-pooling; flattened per patch.

    [P, p, p, 3] -> [P, K], K = 48 * (p // 8)^2 for p a multiple of 8 (28 px -> 3x3x48 = 432).
    The layers are named Conv_0..Conv_2 (the parameter tree of `nn.Conv`); `conv_impl` picks how the
    convolutions are computed, not what they compute.
    """
    filters: Sequence[int] = (12, 24, 48)
    dtype: Any = jnp.float32        # compute dtype; parameters stay float32
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, patches: Array) -> Array:
        x = patches
        for i, f in enumerate(self.filters):
            x = Conv3x3(f, impl=self.conv_impl, dtype=self.dtype, name=f"Conv_{i}")(x)
            x = max_pool2(nn.relu(x))
        return x.reshape(x.shape[0], -1)


class WeightNet(nn.Module):
    """One patch's feature [K] -> its weight a in (0, 1): dense 800, 512, 128 (ReLU), 1 sigmoid."""
    hidden: Sequence[int] = (800, 512, 128)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: Array) -> Array:
        x = h
        for n in self.hidden:
            x = nn.relu(Dense(n, dtype=self.dtype)(x))
        return nn.sigmoid(Dense(1, dtype=self.dtype)(x).astype(jnp.float32))[0]


class Classifier(nn.Module):
    """Aggregated vector -> logit: two hidden ReLU layers and one output unit (sigmoid outside)."""
    hidden: Sequence[int] = (256, 64)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, f: Array) -> Array:
        x = f
        for n in self.hidden:
            x = nn.relu(Dense(n, dtype=self.dtype)(x))
        return Dense(1, dtype=self.dtype)(x)[0].astype(jnp.float32)


def aggregate(features: Array, weights: Array, aggregation: str) -> Array:
    """Patch features [P, K] and weights [P] -> the image vector.

    average: sum a_j h_j / P [K];  sum: sum a_j h_j [K];  normalized: sum a_j h_j / (sum a_j + eps)
    [K];  concat: (a_j h_j)_j [P * K] (see AGGREGATIONS).
    """
    if aggregation == "average":
        return weights @ features / weights.shape[0]
    if aggregation == "normalized":
        return weights @ features / (weights.sum() + WEIGHTED_MEAN_EPS)
    if aggregation == "sum":
        return weights @ features
    if aggregation == "concat":
        return (weights[:, None] * features).reshape(-1)
    raise ValueError(f"config.model.aggregation: expected one of {AGGREGATIONS}, found {aggregation!r}")


class PatchWeightClassifier(nn.Module):
    """Paper A's model on one image [H, W, 3].

    `features(image)` -> patch feature grid [gh, gw, K]; `patch_weights(grid)` -> [gh, gw];
    `head(grid)` -> (logit [], weights [gh, gw]); `__call__(image)` = head(features(image)).
    `classify(vector)` -> logit from an aggregated vector (the CRM fast path uses it).
    `dtype` is the compute dtype of the convolutions and dense layers (config.model.dtype); the
    feature grid, weights and logit it returns are float32 either way, as are its parameters.
    """
    patch_size: int = 28
    aggregation: str = "average"
    mlp_hidden: Sequence[int] = (256, 64)
    weight_hidden: Sequence[int] = (800, 512, 128)
    dtype: Any = jnp.float32
    conv_impl: str = "auto"         # how the patch CNN's convolutions are computed (`conv_impl_for`)

    def setup(self):
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"config.model.aggregation: expected one of {AGGREGATIONS}, "
                             f"found {self.aggregation!r}")
        self.patch_cnn = PatchCNN(dtype=self.dtype, conv_impl=self.conv_impl)
        # The weight network is applied to every patch by nn.vmap (shared parameters).
        weight_net = nn.vmap(WeightNet, in_axes=0, out_axes=0, variable_axes={"params": None},
                             split_rngs={"params": False})
        self.weight_net = weight_net(tuple(self.weight_hidden), dtype=self.dtype)
        self.classifier = Classifier(self.mlp_hidden, dtype=self.dtype)

    def features(self, image: Array) -> Array:
        patches = patchify(image, self.patch_size)
        gh, gw = patches.shape[:2]
        h = self.patch_cnn(patches.reshape((gh * gw,) + patches.shape[2:]))
        return h.reshape(gh, gw, -1).astype(jnp.float32)

    def patch_weights(self, grid: Array) -> Array:
        chex.assert_rank(grid, 3)
        gh, gw, k = grid.shape
        return self.weight_net(grid.reshape(gh * gw, k)).reshape(gh, gw)

    def classify(self, vector: Array) -> Array:
        return self.classifier(vector)

    def head(self, grid: Array) -> tuple[Array, Array]:
        chex.assert_rank(grid, 3)
        gh, gw, k = grid.shape
        a = self.patch_weights(grid)
        f = aggregate(grid.reshape(gh * gw, k), a.reshape(-1), self.aggregation)
        return self.classify(f), a

    def __call__(self, image: Array) -> tuple[Array, Array]:
        return self.head(self.features(image))


def crm_patch(model: PatchWeightClassifier, variables: dict, grid: Array) -> Array:
    """CRM of the head over the patch grid, exact and without re-running the weight net per ablation.

    Zero-ablating patch j (all K channels) changes its weight to a0 = weight_net(0) and removes
    a_j h_j from the weighted sum, so for "normalized" the ablated vector is (S - a_j h_j) / (A - a_j
    + a0 + eps), for "sum" it is S - a_j h_j and for "average" (S - a_j h_j) / P. Scores are (1 - p, p), so
    M_j = sum_c (s_c - s_c(j))^2 = 2 (p - p_j)^2. Equals `cervix_jax.explain.crm` on the head.
    grid [gh, gw, K] -> [gh, gw]. "concat" is not decomposable this way: use the generic crm.
    """
    chex.assert_rank(grid, 3)
    if model.aggregation == "concat":
        raise ValueError("crm_patch: aggregation 'concat' has no closed form; use "
                         "cervix_jax.explain.crm(head_fn, features)")
    gh, gw, k = grid.shape
    h = grid.reshape(gh * gw, k)
    a = model.apply(variables, grid, method=PatchWeightClassifier.patch_weights).reshape(-1)
    a0 = model.apply(variables, jnp.zeros((1, 1, k), grid.dtype),
                     method=PatchWeightClassifier.patch_weights)[0, 0]
    s = a @ h
    ablated = s[None, :] - a[:, None] * h                          # [P, K]
    if model.aggregation == "normalized":
        ablated = ablated / (a.sum() - a + a0 + WEIGHTED_MEAN_EPS)[:, None]
        full = s / (a.sum() + WEIGHTED_MEAN_EPS)
    elif model.aggregation == "average":
        ablated, full = ablated / a.shape[0], s / a.shape[0]
    else:
        full = s
    classify = lambda v: model.apply(variables, v, method=PatchWeightClassifier.classify)
    p = jax.nn.sigmoid(classify(full))
    p_j = jax.nn.sigmoid(jax.vmap(classify)(ablated))
    return (2.0 * (p - p_j) ** 2).reshape(gh, gw)
