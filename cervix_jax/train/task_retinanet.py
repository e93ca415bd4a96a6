"""Paper B stage 1: the RetinaNet detector trained from scratch, as a Task (AVE setting).

Every image has ONE ground-truth box, the bounding box of its cervix mask (`batch["cervix_mask"]`, so
the data config sets `with_masks=True`), labelled with the image's treatability class (K = 2 sigmoid
classes: 0 treatable, 1 not treatable). The image-level probability the engine scores (accuracy, AUC, ...
through `binary_metrics`) is `detection.image_scores(cls_logits, config.model.score_rule)`, by default
the "not treatable" probability of the top-scoring anchor (alternatives: "max_class", "ratio").

Everything trains, BatchNorm included (from scratch, frozen BatchNorm does not learn): `params` holds
{"model": RetinaNet parameters, "batch_stats": BatchNorm running statistics}. The loss runs the network
with batch statistics (synchronised over the data-parallel axis) and hands the new running statistics
back as `aux["set_params"]`; the train step writes them after the optimizer update (they get no
gradient). Prediction uses the running statistics, as stage 2 does.

config.model keys (`DEFAULTS`; see configs/retinanet.py):
  backbone              "resnet50" (stages 3, 4, 6, 3) | "tiny" (one block per stage, tests)
  width, feature_size   ResNet stage-2 width (64 in ResNet50), FPN channels (256)
  head_width, head_depth  subnet convs (256, 4 in RetinaNet)
  style, stem, bn_eps, conv_bias, p6_from   see models/resnet.py, models/fpn.py
  box_style             anchors and box coding: "keras" (keras-retinanet) | "torchvision"
  anchor_scale          anchor sizes are anchor_scale * (32, 64, 128, 256, 512)
  pos_iou, neg_iou      matching thresholds (0.5, 0.4), plus low-quality matches
  focal_alpha, focal_gamma, box_loss    focal loss (0.25, 2) and "smooth_l1" | "l1"
  score_rule            image score, see detection.image_scores
  dtype                 compute dtype "float32" | "bfloat16" (parameters and losses stay float32)
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cervix_jax import detection
from cervix_jax.models import fpn, retinanet
from cervix_jax.models.parts import ExplainableModel
from cervix_jax.train.parallel import AXIS
from cervix_jax.train.task import Task

DEFAULTS = {
    "backbone": "resnet50",
    "width": 64,
    "feature_size": 256,
    "head_width": 256,
    "head_depth": 4,
    "style": "caffe",
    "stem": "same",
    "bn_eps": 1e-5,
    "conv_bias": False,
    "p6_from": "C5",
    "box_style": "keras",
    "anchor_scale": 1.0,
    "pos_iou": 0.5,
    "neg_iou": 0.4,
    "focal_alpha": 0.25,
    "focal_gamma": 2.0,
    "box_loss": "smooth_l1",
    "score_rule": "top_anchor",
    "dtype": "float32",
}
STAGES = {"resnet50": (3, 4, 6, 3), "tiny": (1, 1, 1, 1)}
ARCH_KEYS = ("backbone", "width", "feature_size", "style", "stem", "bn_eps", "conv_bias", "p6_from")
CLASS_NAMES = ("treatable", "not_treatable")
_INIT_HW = (64, 64)


def network_from_config(m, *, bn_axis_name=None) -> retinanet.RetinaNet:
    """The RetinaNet that config.model `m` describes."""
    if m.backbone not in STAGES:
        raise ValueError(f"config.model.backbone: expected one of {sorted(STAGES)}, found {m.backbone!r}")
    if m.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"config.model.dtype: expected 'float32' or 'bfloat16', found {m.dtype!r}")
    return retinanet.RetinaNet(
        stage_sizes=STAGES[m.backbone], width=int(m.width), feature_size=int(m.feature_size),
        style=m.style, stem=m.stem, bn_eps=float(m.bn_eps), conv_bias=bool(m.conv_bias), p6_from=m.p6_from,
        dtype=jnp.dtype(m.dtype), bn_axis_name=bn_axis_name, num_classes=len(CLASS_NAMES),
        head_width=int(m.head_width), head_depth=int(m.head_depth))


@dataclasses.dataclass
class RetinaNetTask(Task):
    """The Task protocol (cervix_jax/train/task.py) for the stage-1 detector."""

    net: retinanet.RetinaNet                 # BatchNorm in inference mode (predict)
    train_net: retinanet.RetinaNet           # BatchNorm synchronised over the data-parallel axis
    model_config: object
    name: str = "retinanet"

    @property
    def box_style(self) -> str:
        return self.model_config.box_style

    def anchors(self, image_hw) -> np.ndarray:
        """Anchors [A, 4] for padded images of size image_hw (static)."""
        sizes = tuple(float(self.model_config.anchor_scale) * s for s in detection.anchors.SIZES)
        return detection.anchors_for_shape(tuple(image_hw), self.box_style, sizes=sizes)

    def init(self, rng, image_shape):
        # eager: op-by-op compiles are cached; a jitted init compiles slowly on CPU (threefry)
        variables = self.net.init(rng, jnp.zeros((1, *_INIT_HW, 3), jnp.float32))
        return {"params": {"model": variables["params"], "batch_stats": variables["batch_stats"]},
                "frozen": {}}

    def init_example_state(self, num_examples, image_shape=None):
        return None

    def ground_truth(self, batch):
        """One box per image from its cervix mask: boxes [b, 1, 4], labels [b, 1], valid [b, 1]."""
        if "cervix_mask" not in batch:
            raise ValueError("retinanet task: batches need 'cervix_mask' (set config.data.with_masks=True)")
        boxes, valid = detection.mask_to_box(batch["cervix_mask"])
        valid = valid & (batch["weight"] > 0)
        return boxes[:, None], batch["label"].astype(jnp.int32)[:, None], valid[:, None]

    def loss(self, params, frozen, batch, example_state, rng, *, net=None):
        del frozen, example_state, rng
        m = self.model_config
        net = self.train_net if net is None else net
        out, updated = net.apply({"params": params["model"], "batch_stats": params["batch_stats"]},
                                 batch["image"], train=True, mutable=["batch_stats"])
        boxes, labels, valid = self.ground_truth(batch)
        targets = detection.detection_targets(self.anchors(batch["image"].shape[1:3]), boxes, labels, valid,
                                              len(CLASS_NAMES), box_style=self.box_style,
                                              pos_iou=float(m.pos_iou), neg_iou=float(m.neg_iou))
        loss, parts = detection.retinanet_loss(out["cls_logits"], out["box_deltas"], targets,
                                               box_loss=m.box_loss, alpha=float(m.focal_alpha),
                                               gamma=float(m.focal_gamma))
        w = batch["weight"]
        score = detection.image_scores(jax.lax.stop_gradient(out["cls_logits"]), m.score_rule)
        correct = ((score >= 0.5).astype(jnp.int32) == batch["label"]).astype(jnp.float32)
        metrics = {**parts, "accuracy": jnp.sum(w * correct) / jnp.maximum(jnp.sum(w), 1.0)}
        return loss, {"metrics": metrics, "example_state": None,
                      "set_params": {"batch_stats": updated["batch_stats"]}}

    def outputs(self, params, images):
        """Inference outputs (running BatchNorm statistics): pyramid + cls_logits + box_deltas."""
        return self.net.apply({"params": params["model"], "batch_stats": params["batch_stats"]}, images)

    def predict(self, params, frozen, batch):
        return detection.image_scores(self.outputs(params, batch["image"])["cls_logits"],
                                      self.model_config.score_rule)

    def detect(self, params, images, **kwargs) -> list[dict]:
        """Host detections per image (decode, per-class NMS, top-k; see detection.detections_from_outputs)."""
        out = jax.jit(self.outputs)(params, images)
        anchors = self.anchors(images.shape[1:3])
        return [detection.detections_from_outputs(c, d, anchors, box_style=self.box_style,
                                                  image_hw=images.shape[1:3], **kwargs)
                for c, d in zip(np.asarray(out["cls_logits"]), np.asarray(out["box_deltas"]))]

    def evaluate_extra(self, variables: dict, data, out_dir) -> dict:
        """Detection quality on the test split (see `evaluate_detections`), for `launch.py eval`."""
        examples = data.examples("test", 10 ** 9)
        return {"detection": evaluate_detections(self, variables["params"], examples, out_dir)}

    def explainable(self, variables: dict) -> ExplainableModel:
        """The explained "feature map" is the input image itself (the detector has no GAP head): gradient
        explainers give pixel attributions of the image score; CAM/CRM do not apply."""
        params = variables["params"]
        head = lambda image: jnp.stack([1 - (s := self.predict(params, {}, {"image": image[None]})[0]), s])
        return ExplainableModel(features=lambda image: image, head=head, scores=head,
                                class_names=CLASS_NAMES)


def make(model_config) -> RetinaNetTask:
    """Task factory registered as "retinanet" in cervix_jax/train/task.py; takes config.model."""
    make_net = functools.partial(network_from_config, model_config)
    return RetinaNetTask(net=make_net(), train_net=make_net(bn_axis_name=AXIS), model_config=model_config)


def backbone_variables(params: dict) -> dict:
    """A stage-1 run's `params` -> ResNetFPN variables (the frozen backbone of paper B's stage 2)."""
    return retinanet.backbone_variables({"params": params["model"], "batch_stats": params["batch_stats"]})


def evaluate_detections(task: RetinaNetTask, params, examples: list, out_dir=None, *,
                        batch_size: int = 8, overlays: int = 16) -> dict:
    """Detection quality on per-example dicts (image, display, label, cervix_mask): COCO AP / AP50 / AP75
    of the cervix box labelled with the image's class, the IoU of the top detection with the cervix box
    (mean, and the fraction >= 0.5), and (with `out_dir`) `detections.png`, the first `overlays`
    examples with their boxes."""
    dets, gts, ious = [], [], []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        images = np.stack([ex["image"] for ex in chunk]).astype(np.float32)
        for ex, d in zip(chunk, task.detect(params, images)):
            box, valid = detection.mask_to_box(np.asarray(ex["cervix_mask"]))
            gt = {"boxes": box[None] if valid else np.zeros((0, 4), np.float32),
                  "labels": np.full(int(valid), int(ex["label"]))}
            dets.append(d)
            gts.append(gt)
            if valid:
                top = d["boxes"][:1] if len(d["scores"]) else np.zeros((1, 4), np.float32)
                iou = detection.box_iou(top.astype(np.float64), box[None].astype(np.float64))
                ious.append(float(iou[0, 0]))
    result = {**detection.coco_ap(dets, gts), "top_iou_mean": float(np.mean(ious)) if ious else float("nan"),
              "top_iou_ge_0.5": float(np.mean(np.asarray(ious) >= 0.5)) if ious else float("nan"),
              "num_images": len(examples)}
    if out_dir is not None and examples:
        from cervix_jax.viz.boxes import write_detection_overlays
        n = min(overlays, len(examples))
        write_detection_overlays(str(Path(out_dir) / "detections.png"),
                                 np.stack([ex["display"] for ex in examples[:n]]),
                                 [g["boxes"][0] if len(g["boxes"]) else None for g in gts[:n]], dets[:n],
                                 class_names=CLASS_NAMES)
    return result


# --- paper B stage 2 on a stage-1 run -------------------------------------------------------------------

def stage1_config(path):
    """The config (ConfigDict) of the stage-1 run in workdir `path`, or None when `path` is not a
    retinanet run (e.g. a converter folder)."""
    import ml_collections as mlc
    config_path = Path(path).expanduser() / "config.json"
    if not config_path.is_file():
        return None
    config = json.loads(config_path.read_text())
    if config.get("model", {}).get("name") != "retinanet":
        return None
    return mlc.ConfigDict(config)


def backbone_module(model_config, dtype=jnp.float32) -> fpn.ResNetFPN:
    """The ResNetFPN of a stage-1 RetinaNet (BatchNorm frozen, compute `dtype`): paper B's frozen backbone."""
    net = network_from_config(model_config)
    return fpn.ResNetFPN(stage_sizes=net.stage_sizes, width=net.width, style=net.style, stem=net.stem,
                         bn_eps=net.bn_eps, conv_bias=net.conv_bias, feature_size=net.feature_size,
                         p6_from=net.p6_from, dtype=dtype)


def load_stage1_backbone(path, config) -> dict:
    """ResNetFPN variables of the stage-1 run in workdir `path` (its best checkpoint, else its last)."""
    from types import SimpleNamespace

    from cervix_jax.train.checkpoint import restore
    shapes = SimpleNamespace(image_shape=(*config.data.pad_to, 3), num_examples=1)
    return backbone_variables(restore(config, Path(path).expanduser(), shapes).state.params)
