"""Paper B's Task: a frozen ResNet50-FPN (in `frozen`) and a trainable GAP + dense(2) head (in `params`).

config.model keys (`DEFAULTS`; see configs/pyramid.py):
  levels               level subset, "p3,p6,p7" or a paper head name ("p3p6p7"), see pyramid.parse_levels
  upsample             "nearest_legacy" | "bilinear"
  backbone             "resnet50" | "tiny" (test-only)
  style, stem, bn_eps, conv_bias, p6_from   see models/resnet.py and models/fpn.py
  backbone_checkpoint  "" (random backbone), a folder written by `python -m cervix_jax.convert.cli`, or
                       the workdir of a stage-1 run (configs/retinanet.py): its best checkpoint's
                       backbone + FPN, whose architecture then comes from that run's config
  backbone_random      with a stage-1 `backbone_checkpoint`: take only that run's architecture and
                       random-initialise it as without a checkpoint (the control arm of stage 2)
  dtype                (every family) compute dtype of the backbone, "float32" | "bfloat16"; its maps
                       are cast to float32 before the head: pooling, head, loss, explainers in float32

Without a checkpoint the backbone is random from the fixed key PRNGKey(RANDOM_BACKBONE_SEED), the same
for every config.seed, as a pretrained one would be: seeds vary the head's init and the data order only.
Sweeps over levels, seeds and blur train every head from one backbone pass with the cached-feature
trainer (`train/cached_heads.py`); paper B's table is the report `reports/paper_b_table.py`.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import jax
import jax.numpy as jnp

from cervix_jax.models import fpn, pyramid
from cervix_jax.models.parts import compute_dtype
from cervix_jax.train.task import Task

DEFAULTS = {
    "levels": "p3,p6,p7",           # level list or a paper head name (models.pyramid.parse_levels)
    "upsample": "nearest_legacy",   # | "bilinear"
    "backbone": "resnet50",         # | "tiny" (tests, runlocal)
    "style": "caffe",               # keras-retinanet (the authors' framework) | "torchvision"
    "stem": "same",                 # keras-resnet 0.2 | "pad3_same" (0.1) | "symmetric" (torchvision)
    "bn_eps": 1e-5,                 # torchvision COCO v1 weights: 0.0
    "conv_bias": False,
    "p6_from": "C5",                # torchvision v1: "P5"
    "backbone_checkpoint": "",      # folder from `python -m cervix_jax.convert.cli`
    "backbone_random": False,       # stage-1 checkpoint: its architecture, random weights (control)
}
BACKBONES = {"resnet50": fpn.ResNet50FPN, "tiny": fpn._ResNetTinyFPN}
ARCH_KEYS = ("backbone", "style", "stem", "bn_eps", "conv_bias", "p6_from")
_INIT_HW = (64, 64)   # parameter shapes do not depend on the image size
RANDOM_BACKBONE_SEED = 0   # the random backbone (no checkpoint) is the same for every config.seed


def backbone_from_config(model_config) -> fpn.ResNetFPN:
    """The ResNetFPN that config.model describes."""
    if model_config.backbone not in BACKBONES:
        raise ValueError(f"config.model.backbone: expected one of {sorted(BACKBONES)}, "
                         f"found {model_config.backbone!r}")
    return BACKBONES[model_config.backbone](
        style=model_config.style, stem=model_config.stem, bn_eps=float(model_config.bn_eps),
        conv_bias=bool(model_config.conv_bias), p6_from=model_config.p6_from,
        dtype=compute_dtype(model_config.get("dtype", "float32")))


def load_backbone_checkpoint(path: str, abstract_frozen, model_config) -> dict:
    """Restores {"frozen": ...} from a converter folder; checks its architecture against config.model."""
    import orbax.checkpoint as ocp
    path = os.path.abspath(os.path.expanduser(path))
    meta_path = os.path.join(path, "backbone.json")
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"config.model.backbone_checkpoint: expected {meta_path} (written by "
                                f"`python -m cervix_jax.convert.cli`), found no such file")
    with open(meta_path) as f:
        meta = json.load(f)
    wrong = {k: (meta[k], model_config[k]) for k in ARCH_KEYS if meta[k] != model_config[k]}
    if wrong:
        flags = " ".join(f"--config.model.{k}={v[0]}" for k, v in wrong.items())
        raise ValueError(f"config.model.backbone_checkpoint {path}: the checkpoint was converted for "
                         f"{ {k: v[0] for k, v in wrong.items()} } but the config says "
                         f"{ {k: v[1] for k, v in wrong.items()} }; run with {flags}")
    restored = ocp.StandardCheckpointer().restore(os.path.join(path, "state"),
                                                  {"frozen": abstract_frozen})
    return restored["frozen"]


@dataclasses.dataclass
class PyramidTask(Task):
    """The Task protocol (cervix_jax/train/task.py) for PyramidConcatClassifier."""

    model: pyramid.PyramidConcatClassifier
    backbone_checkpoint: str
    model_config: object
    name: str = "pyramid"
    stage1: object = None                # config of a stage-1 run when backbone_checkpoint is one

    @property
    def num_features(self) -> int:
        return self.model.backbone.feature_size * len(self.model.levels)

    def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> dict:
        """Random head from `rng`; backbone restored from config.model.backbone_checkpoint, else (or with
        backbone_random) random from PRNGKey(RANDOM_BACKBONE_SEED) whatever `rng` (a fixed feature
        extractor for every seed)."""
        rng_backbone = jax.random.PRNGKey(RANDOM_BACKBONE_SEED)
        dummy = jnp.zeros((1, *_INIT_HW, 3), jnp.float32)
        if self.stage1 is not None and self.model_config.get("backbone_random", False):
            frozen = self.model.backbone.init(rng_backbone, dummy)     # the control arm
        elif self.stage1 is not None:
            from cervix_jax.train import task_retinanet
            frozen = task_retinanet.load_stage1_backbone(self.backbone_checkpoint, self.stage1)
        elif self.backbone_checkpoint:
            abstract = jax.eval_shape(self.model.backbone.init, rng_backbone, dummy)
            frozen = load_backbone_checkpoint(self.backbone_checkpoint, abstract, self.model_config)
        else:   # eager: op-by-op compiles are cached across tasks, a jitted init recompiles per module
            frozen = self.model.backbone.init(rng_backbone, dummy)
        return {"params": self.init_params(rng), "frozen": frozen}

    def init_params(self, rng: jax.Array) -> dict:
        """The head part of `init(rng)`: {"classifier": {"kernel" [K, 2], "bias" [2]}}."""
        _, rng_head = jax.random.split(rng)
        return pyramid.init_head(rng_head, self.num_features, self.model.num_classes)

    def init_example_state(self, num_examples: int, image_shape=None) -> Optional[dict]:
        return None

    def pyramid_maps(self, frozen: dict, images):
        """images [b, H, W, 3] -> {"C2".."C5", "P3".."P7"} float32 (whatever config.model.dtype the
        backbone computes in), no gradient."""
        maps = self.model.backbone.apply(frozen, images)
        return jax.lax.stop_gradient(jax.tree.map(lambda m: m.astype(jnp.float32), maps))

    def logits(self, params: dict, frozen: dict, images, valid=None):
        """images [b, H, W, 3] (+ valid [b, H, W]: GAP over the unpadded region) -> logits [b, 2]."""
        feature_map = pyramid.concat_levels(self.pyramid_maps(frozen, images), self.model.levels,
                                            self.model.upsample)
        return self.model.apply({"params": params}, pyramid.pool(feature_map, valid), method="logits")

    def loss(self, params, frozen, batch, example_state, rng):
        logits = self.logits(params, frozen, batch["image"], batch.get("valid"))
        weights = batch["weight"]
        loss = pyramid.cross_entropy(logits, batch["label"], weights)
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        accuracy = jnp.sum(weights * correct) / jnp.maximum(jnp.sum(weights), 1.0)
        return loss, {"metrics": {"loss": loss, "accuracy": accuracy}, "example_state": None}

    def predict(self, params, frozen, batch):
        return jax.nn.softmax(self.logits(params, frozen, batch["image"], batch.get("valid")))[:, 1]

    def explainable(self, variables: dict):
        return pyramid.explainable(self.model, pyramid.join_variables(variables["params"],
                                                                      variables["frozen"]))


def make(model_config) -> PyramidTask:
    """Task factory registered as "pyramid" in cervix_jax/train/task.py; takes config.model."""
    from cervix_jax.train import task_retinanet
    m = model_config
    stage1 = task_retinanet.stage1_config(m.backbone_checkpoint) if m.backbone_checkpoint else None
    if stage1 is not None:
        backbone = task_retinanet.backbone_module(stage1.model, compute_dtype(m.get("dtype", "float32")))
    else:
        backbone = backbone_from_config(m)
    model = pyramid.PyramidConcatClassifier(levels=pyramid.parse_levels(m.levels), backbone=backbone,
                                            upsample=m.upsample)
    return PyramidTask(model=model, backbone_checkpoint=m.backbone_checkpoint, model_config=m, stage1=stage1)
