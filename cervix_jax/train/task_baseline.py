"""The `Task` for paper A's Table 1 baselines: a whole-image CNN on the downsampled image or a crop.

config.model keys (family "baseline", defaults `DEFAULTS`):
  arch           "lenet" | "caffenet" | "vgg16" | "inception" (`cervix_jax.models.baselines`)
  input_size     (h, w) the network's input, (0, 0) = the paper's size for the arch capped at the
                 image's shorter side (`baselines.input_hw`); the image (or crop) is resampled to it
  width, fc_width  conv width multiplier and dense width of CaffeNet/VGG16/Inception (1.0 and 4096:
                 the papers' networks); LeNet keeps LeNet-5's
  crop           "none" (the whole image, downsampled: the annotation-free rows), "center" (Crop-k: the
                 centred crop_size x crop_size box; k is chosen on validation among three sizes by the
                 Table 1 sweep) or "box" (the Hu'19 analogue: the cervix box, then the classifier)
  crop_size      k in pixels of the pipeline's image (config.data.pad_to), for crop="center"
  box_source     for crop="box": "oracle" (the ground-truth cervix mask's box: an upper bound for a
                 detector; needs config.data.with_masks) or the path of an .npz with `id` [N] and
                 `box` [N, 4] (y0, x0, y1, x1 in the pipeline image's pixels), e.g. stage-1 detections;
                 an image without a box there (or with nan) is seen whole
  box_margin     the box grows by this fraction of its size on every side (clipped to the image)
  freeze_blocks  vgg16 only: conv blocks 1..k are frozen (Table 1's FZ1-FZ4; 0 = all trained)
  checkpoint     vgg16 only: a torchvision vgg16 state dict (.pth/.pt needs torch, .safetensors, .npz)
                 converted strictly by `convert.torchvision.vgg16_from_torchvision`; its ImageNet
                 output layer is replaced by a new 1-logit head. "" = from scratch (Glorot).
Loss: BCE on the logit (weighted mean over the batch); dropout (CaffeNet, VGG16, Inception) in training.
"""
from __future__ import annotations

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from cervix_jax.models import baselines
from cervix_jax.models.parts import ExplainableModel
from cervix_jax.train.task import Task

CROPS = ("none", "center", "box")
DEFAULTS = {"arch": "vgg16", "input_size": (0, 0), "width": 1.0, "fc_width": 4096, "crop": "none",
            "crop_size": 0, "box_source": "oracle", "box_margin": 0.1, "freeze_blocks": 0, "checkpoint": ""}


@dataclasses.dataclass
class BaselineTask(Task):
    model_config: object
    name: str = "baseline"

    def __post_init__(self):
        m = self.model_config
        self.arch = m.arch
        self.module = baselines.make_model(m.arch, width=float(m.width), fc_width=int(m.fc_width))
        if m.crop not in CROPS:
            raise ValueError(f"config.model.crop: expected one of {CROPS}, found {m.crop!r}")
        if m.crop == "center" and int(m.crop_size) <= 0:
            raise ValueError(f"config.model.crop_size: Crop-k needs k > 0 pixels, found {m.crop_size}")
        self.crop_size = int(m.crop_size)
        self.requested_input = tuple(int(v) for v in m.input_size)
        self.crop = m.crop
        self.margin = float(m.box_margin)
        self.freeze_blocks = int(m.freeze_blocks)
        if self.freeze_blocks and m.arch != "vgg16":
            raise ValueError(f"config.model.freeze_blocks={self.freeze_blocks}: only arch 'vgg16' has "
                             f"blocks to freeze (Table 1's FZ rows), found arch {m.arch!r}")
        if not 0 <= self.freeze_blocks <= 5:
            raise ValueError(f"config.model.freeze_blocks: expected 0..5, found {self.freeze_blocks}")
        if m.checkpoint and m.arch != "vgg16":
            raise ValueError(f"config.model.checkpoint: only arch 'vgg16' converts a torchvision state "
                             f"dict, found arch {m.arch!r}")
        self.checkpoint = m.checkpoint
        self.boxes = None
        if self.crop == "box" and m.box_source != "oracle":
            if not os.path.exists(m.box_source):
                raise FileNotFoundError(f"config.model.box_source: expected 'oracle' or an .npz with "
                                        f"'id' and 'box', found no file {m.box_source!r}")
            with np.load(m.box_source) as z:
                ids, boxes = np.asarray(z["id"], np.int64), np.asarray(z["box"], np.float32)
            if boxes.shape != (len(ids), 4):
                raise ValueError(f"{m.box_source}: expected box [N, 4] for id [N], found {boxes.shape} "
                                 f"for {ids.shape}")
            table = np.full((int(ids.max()) + 1, 4), np.nan, np.float32)
            table[ids] = boxes
            self.boxes = jnp.asarray(table)          # ids without a box: nan -> the whole image

    def input_hw(self, image_hw) -> tuple[int, int]:
        """The network input for images of image_hw (the paper's size, capped at what it sees)."""
        cap = (self.crop_size,) * 2 if self.crop == "center" else tuple(image_hw)   # never upsample
        return baselines.input_hw(self.arch, cap, self.requested_input)

    # -- the image -> network input ----------------------------------------------------------------
    def batch_boxes(self, batch) -> jax.Array:
        """[b, 4] boxes (y0, x0, y1, x1) of the batch's images for the configured crop."""
        b, h, w = batch["image"].shape[:3]
        whole = jnp.array([0, 0, h, w], jnp.float32)
        if self.crop == "none":
            return jnp.broadcast_to(whole, (b, 4))
        if self.crop == "center":
            return jnp.broadcast_to(jnp.asarray(baselines.center_box((h, w), self.crop_size)), (b, 4))
        if self.boxes is not None:
            rows = self.boxes[jnp.clip(batch["id"], 0, self.boxes.shape[0] - 1)]
            known = (batch["id"] < self.boxes.shape[0]) & jnp.all(jnp.isfinite(rows), axis=1)
            return jnp.where(known[:, None], rows, whole)
        if "cervix_mask" not in batch:
            raise KeyError("config.model.crop='box' with box_source='oracle' needs the cervix mask in "
                           "the batch: set config.data.with_masks=True")
        return jax.vmap(lambda m: baselines.box_from_mask(m, self.margin))(batch["cervix_mask"])

    def inputs(self, batch) -> jax.Array:
        """[b, H, W, 3] -> [b, h, w, 3] network inputs (crop, then resample to input_size)."""
        chex.assert_rank(batch["image"], 4)
        boxes = self.batch_boxes(batch)
        out = self.input_hw(batch["image"].shape[1:3])
        return jax.vmap(lambda x, bx: baselines.crop_resize(x, bx, out))(batch["image"], boxes)

    # -- Task protocol -------------------------------------------------------------------------------
    def _split(self, params):
        """Full params -> (trainable, frozen): VGG16 conv layers of blocks <= freeze_blocks frozen."""
        flat = traverse_util.flatten_dict(params)
        frozen_layers = {f"Conv_{i}" for i, b in enumerate(baselines.VGG16_BLOCK_OF_CONV)
                         if b <= self.freeze_blocks}
        train = {p: v for p, v in flat.items() if p[0] not in frozen_layers}
        frozen = {p: v for p, v in flat.items() if p[0] in frozen_layers}
        return (traverse_util.unflatten_dict(train),
                traverse_util.unflatten_dict(frozen) if frozen else {})

    @staticmethod
    def _merge(params, frozen):
        if not frozen:
            return params
        return {**params, **frozen}

    def init(self, rng, image_shape):
        if self.crop == "center" and self.crop_size > min(image_shape[:2]):
            raise ValueError(f"config.model.crop_size={self.crop_size}: larger than the image "
                             f"{tuple(image_shape[:2])} (config.data.pad_to)")
        # one jitted init (op-by-op init compiles one program per parameter shape)
        x = jnp.zeros((1, *self.input_hw(image_shape[:2]), 3), jnp.float32)
        params = jax.jit(self.module.init)(rng, x)["params"]
        if self.checkpoint:
            from cervix_jax.convert.cli import read_state_dict
            from cervix_jax.convert.torchvision import vgg16_from_torchvision
            module, converted = vgg16_from_torchvision(read_state_dict(self.checkpoint), include_head=False)
            if module.fc_width != self.module.fc_width or self.module.width != 1.0:
                raise ValueError(f"config.model.checkpoint {self.checkpoint}: a vgg16 of fc width "
                                 f"{module.fc_width} and width 1.0; the config says fc_width="
                                 f"{self.module.fc_width}, width={self.module.width}")
            params = {**params, **converted["params"]}        # the new 1-logit head stays random
        trainable, frozen = self._split(params)
        return {"params": trainable, "frozen": frozen}

    def init_example_state(self, num_examples: int, image_shape=None):
        return None

    def logits(self, params, frozen, batch, *, train: bool = False, rng=None):
        x = self.inputs(batch)
        rngs = {"dropout": rng} if train else {}
        return self.module.apply({"params": self._merge(params, frozen)}, x, train=train, rngs=rngs)

    def loss(self, params, frozen, batch, example_state, rng):
        del example_state
        logits = self.logits(params, frozen, batch, train=True, rng=rng)
        labels = batch["label"].astype(jnp.float32)
        w = batch["weight"].astype(jnp.float32)
        mean = lambda v: jnp.sum(w * v) / jnp.maximum(jnp.sum(w), 1.0)
        bce = optax.sigmoid_binary_cross_entropy(logits, labels)
        acc = ((logits > 0) == (labels > 0.5)).astype(jnp.float32)
        return mean(bce), {"metrics": {"bce": mean(bce), "accuracy": mean(acc)}, "example_state": None}

    def predict(self, params, frozen, batch):
        return jax.nn.sigmoid(self.logits(params, frozen, batch))

    def image_features(self, params, frozen, batch) -> jax.Array:
        """[b, K] image-level features before the classifier (global average pool of the last conv
        map; LeNet/CaffeNet: the flattened last conv map is pooled the same way). For Fig. 4d."""
        x = self.inputs(batch)
        v = {"params": self._merge(params, frozen)}
        if self.arch in ("vgg16", "inception"):
            f = self.module.apply(v, x, method=type(self.module).features)
        else:
            f = self.module.apply(v, x, capture_intermediates=lambda m, n: isinstance(m, baselines.nn.Conv),
                                  mutable=["intermediates"])[1]["intermediates"]
            f = jax.tree_util.tree_leaves(f)[-1]
        return f.mean((1, 2))

    def explainable(self, variables) -> ExplainableModel:
        """Views on the network input: features(image) = the resampled whole image (crop "none" or
        "center"; the box crop needs masks, so explain it on its own inputs), head = the network."""
        v = {"params": self._merge(variables["params"], variables["frozen"])}

        def features(image):
            h, w = image.shape[:2]
            box = (baselines.center_box((h, w), self.crop_size) if self.crop == "center" else
                   np.array([0, 0, h, w], np.float32))
            return baselines.crop_resize(image, box, self.input_hw((h, w)))

        def head(x):
            p = jax.nn.sigmoid(self.module.apply(v, x[None])[0])
            return jnp.stack([1.0 - p, p])

        return ExplainableModel(features=features, head=head, scores=lambda im: head(features(im)),
                                class_names=("normal", "dysplasia"))


def make(model_config) -> BaselineTask:
    return BaselineTask(model_config)
