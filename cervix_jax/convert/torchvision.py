"""torchvision state dicts -> Flax ResNet50 / ResNet50-FPN variables.

Accepts `retinanet_resnet50_fpn` (v1: P6 from P5) and `retinanet_resnet50_fpn_v2` (P6 from C5) state
dicts, old (`fpn.inner_blocks.0.weight`) and new (`fpn.inner_blocks.0.0.weight`) FPN key formats, and
plain `resnet50` state dicts. Values may be NumPy arrays or torch tensors (torch is not imported).
Conv weights go OIHW -> HWIO. `num_batches_tracked` is dropped; the ImageNet classifier (`fc.*`) is
ignored explicitly (logged), and so are the detection heads (`head.*`) unless `heads=True`, which loads
them too (`head.classification_head.{conv.i.0, conv.i.1 (v2 GroupNorm), cls_logits}`,
`head.regression_head.{..., bbox_reg}`; old files' `conv.{0,2,4,6}` are accepted) into a
`retinanet.RetinaNet` whose outputs use torchvision's anchors (`anchors_for_shape(hw, "torchvision")`)
and box coding (`decode_boxes(..., style="torchvision")`).
"""
from __future__ import annotations

import re
from typing import Mapping, Optional

from cervix_jax.convert import common
from cervix_jax.models import fpn, resnet
from cervix_jax.models import retinanet as retinanet_model

_OLD_FPN_KEY = re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$")
_OLD_HEAD_KEY = re.compile(r"^(head\.(?:classification|regression)_head\.conv)\.([0246])\.(weight|bias)$")
_TORCH_BRANCH = {"branch2a": "conv1", "bn_branch2a": "bn1", "branch2b": "conv2", "bn_branch2b": "bn2",
                 "branch2c": "conv3", "bn_branch2c": "bn3", "branch1": "downsample.0",
                 "bn_branch1": "downsample.1"}
_TORCH_FPN = {"C3_reduced": "inner_blocks.0.0", "C4_reduced": "inner_blocks.1.0",
              "C5_reduced": "inner_blocks.2.0", "P3": "layer_blocks.0.0", "P4": "layer_blocks.1.0",
              "P5": "layer_blocks.2.0", "P6": "extra_blocks.p6", "P7": "extra_blocks.p7"}
DEFAULT_BN_EPS = {"v1": 0.0, "v2": 1e-5}     # torchvision sets eps 0.0 after loading COCO v1 weights


def torchvision_name(layer: str, prefix: str) -> str:
    """Flax layer id -> state-dict prefix ('res3b/bn_branch2a' -> 'backbone.body.layer2.1.bn1')."""
    head = common.parse_head(layer)
    if head is not None:
        kind, index, norm = head
        base = f"head.{kind}_head"
        if index is None:
            return f"{base}.{'cls_logits' if kind == 'classification' else 'bbox_reg'}"
        return f"{base}.conv.{index}.{1 if norm else 0}"
    if layer.startswith("fpn/"):
        return f"backbone.fpn.{_TORCH_FPN[layer[4:]]}"
    if layer in ("conv1", "bn_conv1"):
        return prefix + ("conv1" if layer == "conv1" else "bn1")
    stage, block, part = common.parse_block(layer)
    return f"{prefix}layer{stage - 1}.{block}.{_TORCH_BRANCH[part]}"


def _torch_slot(norm: bool, slot: str):
    if norm:
        return {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}[slot], None
    if slot == "kernel":
        return "weight", lambda w: w.transpose(2, 3, 1, 0)
    return "bias", None


def retinanet_from_torchvision(state_dict: Mapping, *, version: str = "v1",
                               bn_eps: Optional[float] = None, heads: bool = False):
    """State dict -> (fpn.ResNetFPN, variables), or (resnet.ResNet, variables) for a plain resnet50, or with
    `heads=True` (retinanet.RetinaNet, variables) whose outputs add "cls_logits" [N, A, K] and
    "box_deltas" [N, A, 4] (K from `cls_logits.weight`; v2: GroupNorm heads).

    version: "v1" (P6 from P5) | "v2" (P6 from C5); ignored for a plain resnet50.
    bn_eps: None -> 0.0 for v1 (torchvision's COCO v1 weights), 1e-5 for v2 and plain resnet50.
    module.apply(variables, images) -> {"C2".."C5"[, "P3".."P7"]} on torchvision preprocessing.
    """
    if version not in DEFAULT_BN_EPS:
        raise ValueError(f"version: expected 'v1' or 'v2', found {version!r}")
    def new_key(k: str) -> str:
        k = _OLD_FPN_KEY.sub(r"\1.0.\2", k)
        return _OLD_HEAD_KEY.sub(lambda m: f"{m[1]}.{int(m[2]) // 2}.0.{m[3]}", k)

    source = {new_key(k): v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    retinanet = any(k.startswith("backbone.body.") for k in source)
    if retinanet:
        p6 = source.get("backbone.fpn.extra_blocks.p6.weight")
        if p6 is not None and p6.shape[1] != {"v1": 256, "v2": 2048}[version]:
            raise common.ConversionError(
                f"state dict: extra_blocks.p6.weight has {p6.shape[1]} input channels, which is not "
                f"torchvision RetinaNet {version} (v1: 256, P6 from P5; v2: 2048, P6 from C5); "
                f"pass version={'v2' if version == 'v1' else 'v1'!r}")
        eps = DEFAULT_BN_EPS[version] if bn_eps is None else bn_eps
        kwargs = dict(style="torchvision", stem="symmetric", bn_eps=eps, conv_bias=False,
                      p6_from="P5" if version == "v1" else "C5")
        if heads:
            cls = source.get("head.classification_head.cls_logits.weight")
            if cls is None:
                raise common.ConversionError("state dict: heads=True but there is no "
                                             "'head.classification_head.cls_logits.weight'")
            module = retinanet_model.RetinaNet50(num_classes=cls.shape[0] // 9, num_anchors=9,
                                           head_norm="none" if version == "v1" else "group", **kwargs)
        else:
            module = fpn.ResNet50FPN(**kwargs)
        prefix, ignore = "backbone.body.", () if heads else ("head.",)
    else:
        if heads:
            raise common.ConversionError("state dict: heads=True but this is a plain resnet50 "
                                         "(no 'backbone.body.*' keys)")
        module = resnet.ResNet50(style="torchvision", stem="symmetric",
                                 bn_eps=1e-5 if bn_eps is None else bn_eps, conv_bias=False)
        prefix, ignore = "", ("fc.",)
    template = common.template_of(module)
    rules = common.make_rules(template, lambda layer: torchvision_name(layer, prefix), _torch_slot, ".")
    return module, common.strict_assemble(source, rules, template, ignore=ignore,
                                          where=f"torchvision state dict ({version})")


# --- torchvision vgg16 -> cervix_jax.models.baselines.VGG16 (paper A's Table 1, FZ1-FZ4) -------------

VGG16_FEATURE_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)   # Conv_i -> features.<index>
VGG16_CLASSIFIER_INDEX = (0, 3, 6)                                      # Dense_i -> classifier.<index>


def vgg16_from_torchvision(state_dict: Mapping, *, include_head: bool = True):
    """A torchvision `vgg16` state dict -> (baselines.VGG16, {"params": ...}).

    Conv weights OIHW -> HWIO; dense weights [out, in] -> [in, out], and classifier.0's inputs are
    reordered from torch's (C, 7, 7) flattening to the NHWC (7, 7, C) one. With include_head=False
    the ImageNet output layer classifier.6 is ignored on purpose (logged) and the returned params lack
    Dense_2, for a new 1-logit head (`VGG16(num_outputs=1)`); otherwise the module has as many outputs
    as classifier.6 (1000 for ImageNet). Strict: every other tensor used once, every shape checked.
    """
    import numpy as np
    from flax import traverse_util

    from cervix_jax.models.baselines import VGG16

    source = dict(state_dict)
    head = source.get("classifier.6.weight")
    if head is None:
        raise common.ConversionError("torchvision vgg16 state dict: expected classifier.6.weight, found "
                                     f"none among {len(source)} keys (not a vgg16 state dict?)")
    fc = common.to_numpy(source.get("classifier.0.weight", np.zeros((0, 0)))).shape[0]
    module = VGG16(fc_width=int(fc), num_outputs=int(head.shape[0]) if include_head else 1)
    template = common.template_of(module, (32, 32))
    flat = traverse_util.flatten_dict(template)
    if not include_head:
        flat = {p: v for p, v in flat.items() if p[1] != "Dense_2"}
        template = traverse_util.unflatten_dict(flat)
    hwio = lambda w: w.transpose(2, 3, 1, 0)

    def fc0(w):                       # [out, C*7*7] (C, H, W order) -> [7*7*C, out] (H, W, C order)
        out, n = w.shape
        c = n // 49
        return w.reshape(out, c, 7, 7).transpose(2, 3, 1, 0).reshape(49 * c, out)

    rules = {}
    for path in flat:
        layer, slot = path[1], path[2]
        kind, i = layer.split("_")
        if kind == "Conv":
            key = f"features.{VGG16_FEATURE_INDEX[int(i)]}"
            rules[path] = (f"{key}.weight", hwio) if slot == "kernel" else (f"{key}.bias", None)
        else:
            key = f"classifier.{VGG16_CLASSIFIER_INDEX[int(i)]}"
            if slot == "bias":
                rules[path] = (f"{key}.bias", None)
            else:
                rules[path] = (f"{key}.weight", fc0 if i == "0" else (lambda w: w.T))
    variables = common.strict_assemble(source, rules, template,
                                       ignore=() if include_head else ("classifier.6.",),
                                       where="torchvision vgg16 state dict")
    return module, variables
