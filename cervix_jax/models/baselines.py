"""Paper A's Table 1 baselines: whole-image CNNs on a downsampled image or on a crop of it.

Four families (`ARCHS`), each a Flax module on a batch [N, h, w, 3] at its own input size, giving one
logit per image (sigmoid outside):

- `LeNet`    LeNet-5 style (Vasudha'18): conv5x5 6 - pool - conv5x5 16 - pool - dense 120, 84, 1.
- `CaffeNet` CaffeNet/AlexNet style (Xu'17): conv11x11/4 96 - pool - LRN - conv5x5 256 (2 groups) -
             pool - LRN - conv3x3 384, 384 (2 groups), 256 (2 groups) - pool - dense 4096, 4096, 1
             with dropout 0.5 (CaffeNet's pool-before-LRN order).
- `VGG16`    torchvision's `vgg16` layout (13 conv3x3 in 5 blocks, adaptive average pool to 7x7,
             dense 4096, 4096, out), so that `cervix_jax.convert.vgg.vgg16_from_torchvision` loads a
             torchvision state dict exactly; `freeze_blocks` (Table 1's FZ1-FZ4) is the task's business.
- `Inception` an Inception-v1 (GoogLeNet) style network: stem, 9 inception modules (1x1, 3x3-reduce
             3x3, 5x5-reduce 5x5, pool-proj), global average pool, dropout 0.4, dense 1.

`width` scales every conv width (and `fc_width` the dense layers) of CaffeNet, VGG16 and Inception
for CPU-sized runs; 1.0 and 4096 are the papers' networks. LeNet is small and keeps its widths.
`input_hw(arch, image_hw, requested)`: the network input, by default the paper's size capped at the
image's shorter side (images are downsampled, never upsampled). The image reaches the model through
`crop_resize` (the whole image downsampled, a centre crop, or a box), see
`cervix_jax/train/task_baseline.py`.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

ARCHS = ("lenet", "caffenet", "vgg16", "inception")
PAPER_INPUT_SIZES = {"lenet": 32, "caffenet": 227, "vgg16": 224, "inception": 224}   # square inputs
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG16_BLOCK_OF_CONV = (1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5)     # conv index -> block (1..5)

glorot = nn.initializers.xavier_uniform()
# GoogLeNet's convolutions start with bias 0.2 (BVLC's train_val.prototxt), so that few ReLUs start dead: with
# zero biases a CPU-narrow Inception (width 1/16: 4-channel 1x1 convolutions on ReLU outputs) can start with
# its whole stem dead and no gradient below the head
GOOGLENET_BIAS = nn.initializers.constant(0.2)


def _w(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


# --- the image -> model input ------------------------------------------------------------------------

def input_hw(arch: str, image_hw: tuple[int, int], requested=(0, 0)) -> tuple[int, int]:
    """The network input (h, w): `requested` if set, else the paper's square size for `arch`
    (PAPER_INPUT_SIZES) capped at min(image_hw), the image or crop it sees (but CaffeNet at least
    67 px, the others 32, the smallest inputs they run on)."""
    if tuple(requested) != (0, 0):
        return tuple(int(v) for v in requested)
    if arch not in PAPER_INPUT_SIZES:
        raise ValueError(f"config.model.arch: expected one of {ARCHS}, found {arch!r}")
    floor = {"caffenet": 67, "vgg16": 32, "inception": 32, "lenet": 32}[arch]
    side = max(min(PAPER_INPUT_SIZES[arch], min(image_hw)), floor)
    return (side, side)


def crop_resize(image: Array, box: Array, out_hw: tuple[int, int]) -> Array:
    """One image [H, W, C] and a box (y0, x0, y1, x1) in pixel edges (y1, x1 exclusive; floats,
    possibly traced) -> the box resampled to out_hw [oh, ow, C] by `jax.image.scale_and_translate`
    (linear, antialiased when shrinking; half-pixel centres). A box of the output's size at integer
    edges is an exact slice; the whole image box (0, 0, H, W) is a plain resize."""
    oh, ow = out_hw
    box = jnp.asarray(box, jnp.float32)
    sy = oh / jnp.maximum(box[2] - box[0], 1.0)
    sx = ow / jnp.maximum(box[3] - box[1], 1.0)
    scale = jnp.stack([sy, sx])
    translation = jnp.stack([-box[0] * sy, -box[1] * sx])
    return jax.image.scale_and_translate(image.astype(jnp.float32), (oh, ow, image.shape[-1]), (0, 1),
                                         scale, translation, method="linear", antialias=True)


def center_box(hw: tuple[int, int], k: int) -> np.ndarray:
    """The centred k x k box (y0, x0, y1, x1) of an H x W image (k clipped to the image)."""
    h, w = hw
    kh, kw = min(k, h), min(k, w)
    y0, x0 = (h - kh) // 2, (w - kw) // 2
    return np.array([y0, x0, y0 + kh, x0 + kw], np.float32)


def box_from_mask(mask: Array, margin: float = 0.0) -> Array:
    """Bounding box (y0, x0, y1, x1) of mask > 0, pixel edges, grown by `margin` x its size on every
    side and clipped to the image; the whole image when the mask is empty. Jittable."""
    h, w = mask.shape
    rows, cols = jnp.any(mask > 0, axis=1), jnp.any(mask > 0, axis=0)
    empty = ~jnp.any(rows)
    y0 = jnp.argmax(rows)
    y1 = h - jnp.argmax(rows[::-1])
    x0 = jnp.argmax(cols)
    x1 = w - jnp.argmax(cols[::-1])
    box = jnp.stack([y0, x0, y1, x1]).astype(jnp.float32)
    size = jnp.stack([box[2] - box[0], box[3] - box[1]] * 2)
    grown = box + margin * size * jnp.array([-1.0, -1.0, 1.0, 1.0])
    grown = jnp.clip(grown, 0.0, jnp.array([h, w, h, w], jnp.float32))
    return jnp.where(empty, jnp.array([0.0, 0.0, h, w], jnp.float32), grown)


# --- pieces ---------------------------------------------------------------------------------------------

def local_response_norm(x: Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> Array:
    """Across-channel LRN as Caffe and torch.nn.LocalResponseNorm: x / (k + alpha/size * sum_{window}
    x^2)^beta, the window centred on the channel, zero-padded."""
    sq = jnp.square(x)
    pad = [(0, 0)] * (x.ndim - 1) + [(size // 2, (size - 1) // 2)]
    sq = jnp.pad(sq, pad)
    c = x.shape[-1]
    window = sum(sq[..., i:i + c] for i in range(size))
    return x / (k + alpha / size * window) ** beta


def adaptive_avg_pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] averaging weights of torch's AdaptiveAvgPool: bin i covers
    [floor(i n_in / n_out), ceil((i + 1) n_in / n_out))."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        s, e = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, s:e] = 1.0 / (e - s)
    return m


def adaptive_avg_pool(x: Array, out_hw: tuple[int, int]) -> Array:
    """[N, H, W, C] -> [N, oh, ow, C], exactly torch.nn.AdaptiveAvgPool2d."""
    ph = jnp.asarray(adaptive_avg_pool_matrix(x.shape[1], out_hw[0]))
    pw = jnp.asarray(adaptive_avg_pool_matrix(x.shape[2], out_hw[1]))
    return jnp.einsum("ih,jw,nhwc->nijc", ph, pw, x)


def _max_pool(x, window, stride, ceil_mode=False):
    """Max-pool, VALID, or with Caffe's ceil mode (the last partial window kept)."""
    if not ceil_mode:
        return nn.max_pool(x, (window, window), strides=(stride, stride), padding="VALID")
    pads = []
    for n in x.shape[1:3]:
        out = -(-(n - window) // stride) + 1
        pads.append((0, max(0, (out - 1) * stride + window - n)))
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=pads)


class _Head(nn.Module):
    """Dense layers with ReLU and dropout, then one logit per image."""
    hidden: Sequence[int]
    dropout: float = 0.5

    @nn.compact
    def __call__(self, x, train: bool = False):
        for n in self.hidden:
            x = nn.relu(nn.Dense(n, kernel_init=glorot)(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(1, kernel_init=glorot)(x)[:, 0]


# --- the four families ----------------------------------------------------------------------------------

class LeNet(nn.Module):
    """LeNet-5 style on [N, h, w, 3] (32 x 32 in LeCun's network; any size >= 16 works)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        for f in (6, 16):
            x = nn.relu(nn.Conv(f, (5, 5), padding="VALID", kernel_init=glorot)(x))
            x = _max_pool(x, 2, 2)
        x = x.reshape(x.shape[0], -1)
        return _Head((120, 84), dropout=0.0)(x, train)


class CaffeNet(nn.Module):
    """CaffeNet (BVLC reference) style on [N, 227, 227, 3] (smaller inputs work down to ~67 px)."""
    width: float = 1.0
    fc_width: int = 4096

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = functools.partial(nn.Conv, kernel_init=glorot)
        x = nn.relu(conv(_w(96, self.width), (11, 11), strides=(4, 4), padding="VALID")(x))
        x = local_response_norm(_max_pool(x, 3, 2, ceil_mode=True))
        c2 = 2 * _w(128, self.width)
        x = nn.relu(conv(c2, (5, 5), padding=((2, 2), (2, 2)), feature_group_count=2)(x))
        x = local_response_norm(_max_pool(x, 3, 2, ceil_mode=True))
        x = nn.relu(conv(2 * _w(192, self.width), (3, 3), padding="SAME")(x))
        x = nn.relu(conv(2 * _w(192, self.width), (3, 3), padding="SAME", feature_group_count=2)(x))
        x = nn.relu(conv(2 * _w(128, self.width), (3, 3), padding="SAME", feature_group_count=2)(x))
        x = _max_pool(x, 3, 2, ceil_mode=True)
        x = x.reshape(x.shape[0], -1)
        return _Head((self.fc_width, self.fc_width))(x, train)


class VGG16(nn.Module):
    """torchvision's vgg16 (no batch norm) on [N, h, w, 3], h, w >= 32.

    Layer names Conv_0..Conv_12 (features.{0,2,5,...,28}) and Dense_0..Dense_2 (classifier.{0,3,6});
    `num_outputs` 1 for the binary task (1000 reproduces torchvision's ImageNet classifier).
    `features(x)` -> the last conv block's map before the final pool (for Grad-CAM).
    """
    width: float = 1.0
    fc_width: int = 4096
    num_outputs: int = 1
    pool_to: int = 7

    def setup(self):
        convs = [c for c in VGG16_CFG if c != "M"]
        self.convs = [nn.Conv(_w(c, self.width), (3, 3), padding=((1, 1), (1, 1)), kernel_init=glorot,
                              name=f"Conv_{i}") for i, c in enumerate(convs)]
        self.dense = [nn.Dense(n, kernel_init=glorot, name=f"Dense_{i}")
                      for i, n in enumerate((self.fc_width, self.fc_width, self.num_outputs))]
        self.drop = nn.Dropout(0.5)

    def features(self, x):
        i = 0
        for j, c in enumerate(VGG16_CFG):
            if c == "M":
                if j < len(VGG16_CFG) - 1:
                    x = _max_pool(x, 2, 2)
            else:
                x = nn.relu(self.convs[i](x))
                i += 1
        return x

    def head(self, f, train: bool = False):
        x = adaptive_avg_pool(_max_pool(f, 2, 2), (self.pool_to, self.pool_to))
        x = x.reshape(x.shape[0], -1)
        for layer in self.dense[:2]:
            x = self.drop(nn.relu(layer(x)), deterministic=not train)
        out = self.dense[2](x)
        return out[:, 0] if self.num_outputs == 1 else out

    def __call__(self, x, train: bool = False):
        return self.head(self.features(x), train)


class InceptionModule(nn.Module):
    """GoogLeNet's module: 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max-pool -> 1x1, concatenated."""
    c1: int
    c3r: int
    c3: int
    c5r: int
    c5: int
    pp: int

    @nn.compact
    def __call__(self, x):
        conv = lambda f, k: nn.Conv(f, (k, k), padding="SAME", kernel_init=glorot, bias_init=GOOGLENET_BIAS)
        b1 = nn.relu(conv(self.c1, 1)(x))
        b2 = nn.relu(conv(self.c3, 3)(nn.relu(conv(self.c3r, 1)(x))))
        b3 = nn.relu(conv(self.c5, 5)(nn.relu(conv(self.c5r, 1)(x))))
        b4 = nn.relu(conv(self.pp, 1)(nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")))
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


INCEPTION_MODULES = (  # GoogLeNet (Szegedy et al. 2015, Table 1): c1, c3r, c3, c5r, c5, pool-proj
    ("3a", (64, 96, 128, 16, 32, 32)), ("3b", (128, 128, 192, 32, 96, 64)), ("pool", None),
    ("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)),
    ("4c", (128, 128, 256, 24, 64, 64)), ("4d", (112, 144, 288, 32, 64, 64)),
    ("4e", (256, 160, 320, 32, 128, 128)), ("pool", None),
    ("5a", (256, 160, 320, 32, 128, 128)), ("5b", (384, 192, 384, 48, 128, 128)))


class Inception(nn.Module):
    """Inception-v1 (GoogLeNet) style on [N, h, w, 3] (224 in the paper), no auxiliary heads."""
    width: float = 1.0

    def setup(self):
        w = lambda n: _w(n, self.width)
        conv = functools.partial(nn.Conv, kernel_init=glorot, bias_init=GOOGLENET_BIAS)
        self.stem = [conv(w(64), (7, 7), strides=(2, 2), padding="SAME"), conv(w(64), (1, 1)),
                     conv(w(192), (3, 3), padding="SAME")]
        self.modules_ = [None if spec is None else InceptionModule(*map(w, spec), name=f"inception_{n}")
                         for n, spec in INCEPTION_MODULES]
        self.drop = nn.Dropout(0.4)
        self.out = nn.Dense(1, kernel_init=glorot)

    def features(self, x):
        pool = lambda y: nn.max_pool(y, (3, 3), strides=(2, 2), padding="SAME")
        x = pool(nn.relu(self.stem[0](x)))
        x = pool(nn.relu(self.stem[2](nn.relu(self.stem[1](x)))))
        for m in self.modules_:
            x = pool(x) if m is None else m(x)
        return x

    def head(self, f, train: bool = False):
        return self.out(self.drop(f.mean((1, 2)), deterministic=not train))[:, 0]

    def __call__(self, x, train: bool = False):
        return self.head(self.features(x), train)


def make_model(arch: str, *, width: float, fc_width: int) -> nn.Module:
    """The module of `arch` (one of ARCHS)."""
    if arch == "lenet":
        return LeNet()
    if arch == "caffenet":
        return CaffeNet(width=width, fc_width=fc_width)
    if arch == "vgg16":
        return VGG16(width=width, fc_width=fc_width)
    if arch == "inception":
        return Inception(width=width)
    raise ValueError(f"config.model.arch: expected one of {ARCHS}, found {arch!r}")
