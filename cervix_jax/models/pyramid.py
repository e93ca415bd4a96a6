"""Paper B's classifier: chosen pyramid levels upsampled to the finest one, concatenated, GAP, dense, softmax.

    features(images) = concat_c(up(P_l) for l in levels)       [N, h, w, 256 * len(levels)]
    head(F, valid)   = softmax(dense(masked GAP of F))          [N, 2]

Images smaller than `pad_to` are zero-padded (data/pipeline.py, `valid` marks the image pixels). The GAP
is then over the valid region only: cell (i, j) of the h x w feature grid weighs the fraction of its
pixels that are image (`parts.valid_fraction`), so the padding never enters the score. Without
`valid` (or with an image filling pad_to) it is the plain mean.

The backbone (`fpn.ResNetFPN`) is frozen: the Task keeps its variables in `frozen`, and only
`classifier` (the dense layer) trains. `split_variables` / `join_variables` convert between this
module's variables and the Task's {"params", "frozen"}.
"""
from __future__ import annotations

from typing import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from cervix_jax.models import fpn
from cervix_jax.models.parts import ExplainableModel, masked_mean, valid_fraction

LEVELS = ("P3", "P4", "P5", "P6", "P7")
UPSAMPLE = ("nearest_legacy", "bilinear")
# The paper's seven heads.
PAPER_HEADS = {
    "p3": ("P3",), "p4": ("P4",), "p5": ("P5",), "p6": ("P6",), "p7": ("P7",),
    "p3p6p7": ("P3", "P6", "P7"), "p3-p7": LEVELS,
}
CLASS_NAMES = ("treatable", "not_treatable")


def canonical_levels(levels: Sequence[str]) -> tuple[str, ...]:
    """Validates a level subset and sorts it finest first: ("P7", "p3") -> ("P3", "P7")."""
    levels = tuple(str(lvl).upper() for lvl in levels)
    bad = [lvl for lvl in levels if lvl not in LEVELS]
    if not levels or bad or len(set(levels)) != len(levels):
        raise ValueError(f"levels: expected a non-empty subset of {LEVELS} without repeats, "
                         f"found {levels}")
    return tuple(sorted(levels, key=LEVELS.index))


def parse_levels(arg: str) -> tuple[str, ...]:
    """'p3,p6,p7' | a PAPER_HEADS name ('p3p6p7', 'p3-p7') -> canonical levels ("P3", "P6", "P7")."""
    name = arg.strip().lower()
    if name in PAPER_HEADS:
        return PAPER_HEADS[name]
    return canonical_levels([p.strip() for p in name.split(",") if p.strip()])


def upsample(x, out_hw: tuple[int, int], method: str):
    """x [N, h, w, C] -> [N, H, W, C] by `method` in UPSAMPLE (bilinear: half-pixel centres)."""
    if method == "nearest_legacy":
        return fpn.upsample_nearest_legacy(x, out_hw)
    if method == "bilinear":
        return jax.image.resize(x, (x.shape[0], *out_hw, x.shape[-1]), "bilinear")
    raise ValueError(f"upsample: expected one of {UPSAMPLE}, found {method!r}")


def concat_levels(pyramid: dict, levels: Sequence[str], method: str = "nearest_legacy"):
    """{"P3": [N,h3,w3,C], ...} -> [N, h, w, C * len(levels)] at the finest chosen level's size."""
    levels = canonical_levels(levels)
    out_hw = pyramid[levels[0]].shape[1:3]
    maps = [pyramid[levels[0]]] + [upsample(pyramid[lvl], out_hw, method) for lvl in levels[1:]]
    return jnp.concatenate(maps, axis=-1)


def cross_entropy(logits, labels, weights):
    """Weighted mean of -log softmax(logits)[label]: sum(w * l) / max(sum(w), 1)."""
    chex.assert_rank(logits, 2)
    chex.assert_equal_shape([labels, weights])
    losses = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None].astype(jnp.int32), 1)[:, 0]
    return jnp.sum(weights * losses) / jnp.maximum(jnp.sum(weights), 1.0)


class PyramidConcatClassifier(nn.Module):
    """images [N, H, W, 3] -> class scores [N, num_classes] (softmax)."""

    levels: Sequence[str]
    backbone: nn.Module                     # an fpn.ResNetFPN
    upsample: str = "nearest_legacy"
    num_classes: int = 2

    def setup(self):
        canonical_levels(self.levels)
        self.classifier = nn.Dense(self.num_classes)

    def features(self, images):
        """images [N, H, W, 3] -> concatenated pyramid map [N, h, w, K], float32 whatever the
        backbone's compute dtype."""
        maps = {k: v.astype(jnp.float32) for k, v in self.backbone(images).items()}
        return concat_levels(maps, self.levels, self.upsample)

    def logits(self, pooled):
        """pooled [N, K] -> logits [N, num_classes]."""
        return self.classifier(pooled)

    def head(self, feature_map, valid=None):
        """[N, h, w, K] (+ valid [N, H, W] of the padded images) -> softmax scores [N, num_classes]."""
        chex.assert_rank(feature_map, 4)
        return jax.nn.softmax(self.logits(pool(feature_map, valid)))

    def __call__(self, images, valid=None):
        return self.head(self.features(images), valid)


def pool(feature_map, valid=None):
    """[N, h, w, K] -> [N, K]: GAP over the valid region of images padded as `valid` [N, H, W] marks
    (the plain mean when valid is None)."""
    weights = None if valid is None else valid_fraction(valid, feature_map.shape[1:3])
    return masked_mean(feature_map, weights)


def init_head(rng, num_features: int, num_classes: int = 2) -> dict:
    """Random (lecun-normal kernel, zero bias) head params {"classifier": {"kernel", "bias"}}."""
    return {"classifier": nn.Dense(num_classes).init(rng, jnp.zeros((1, num_features)))["params"]}


def split_variables(variables: dict) -> tuple[dict, dict]:
    """PyramidConcatClassifier variables -> (params = {"classifier"}, frozen = ResNetFPN variables)."""
    frozen = {"params": variables["params"]["backbone"],
              "batch_stats": variables["batch_stats"]["backbone"]}
    return {"classifier": variables["params"]["classifier"]}, frozen


def join_variables(params: dict, frozen: dict) -> dict:
    """Inverse of `split_variables`."""
    return {"params": {"backbone": frozen["params"], "classifier": params["classifier"]},
            "batch_stats": {"backbone": frozen["batch_stats"]}}


def explainable(model: PyramidConcatClassifier, variables: dict, valid=None) -> ExplainableModel:
    """Single-example views of `model` with its variables closed over (see parts.ExplainableModel);
    with `valid` [H, W], those of an image padded that way (GAP over its valid region)."""
    classifier = variables["params"]["classifier"]

    def features(image):
        chex.assert_rank(image, 3)
        return model.apply(variables, image[None], method="features")[0]

    def weights(feature_map):
        if valid is None:
            return None
        w = valid_fraction(valid, feature_map.shape[:2])
        return w / jnp.maximum(w.sum(), 1e-12)

    def head(feature_map):
        chex.assert_rank(feature_map, 3)
        return post_pool(masked_mean(feature_map, weights(feature_map)))

    def post_pool(pooled):
        chex.assert_rank(pooled, 1)
        return jax.nn.softmax(pooled @ classifier["kernel"] + classifier["bias"])

    pool_weights = None
    if valid is not None:
        grid = jax.eval_shape(features, jax.ShapeDtypeStruct((*valid.shape, 3), jnp.float32)).shape
        pool_weights = weights(jnp.zeros(grid[:2] + (1,)))
    return ExplainableModel(features=features, head=head, scores=lambda image: head(features(image)),
                            post_pool=post_pool, kernel=classifier["kernel"], class_names=CLASS_NAMES,
                            for_valid=lambda v: explainable(model, variables, v), pool_weights=pool_weights)
