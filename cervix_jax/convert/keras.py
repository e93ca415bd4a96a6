"""Keras HDF5 checkpoints -> Flax ResNet50 / ResNet50-FPN variables.

Reads both layouts Keras writes:
  * legacy HDF5 (published ImageNet files, `model.save("x.h5")`, Keras 2 `save_weights`): a
    `layer_names` attribute, one group per layer with a `weight_names` attribute; at the root or under
    `model_weights`; names with or without the ":0" suffix.
  * Keras 3 `.weights.h5`: `layers/<class path>/vars/<i>` with the layer's name in the `vars` group's
    `name` attribute; variables in creation order (Conv: kernel, bias; BatchNormalization: gamma, beta,
    moving_mean, moving_variance).
Conv kernels are HWIO and Dense kernels (in, out) in both frameworks: no transposes.
"""
from __future__ import annotations

import os

import h5py
import numpy as np

from cervix_jax.convert import common
from cervix_jax.models import fpn, resnet, retinanet

_POSITIONAL = {"batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
               "conv2d": ("kernel", "bias"), "dense": ("kernel", "bias")}
# Keras applications ResNet50: branch -> the digit in conv{S}_block{B}_{digit}_{conv,bn}.
_APPLICATIONS_BRANCH = {"branch2a": 1, "branch2b": 2, "branch2c": 3, "branch1": 0}
RETINANET_HEADS = ("classification_submodel/", "regression_submodel/", "pyramid_classification",
                   "pyramid_regression")


def _text(x) -> str:
    return x.decode("utf8") if isinstance(x, bytes) else str(x)


def read_keras_weights(h5_path: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Flat {"layer/weight": array} (":0" stripped) and all layer names, in either layout."""
    if not os.path.exists(h5_path):
        raise FileNotFoundError(f"Keras weights file {h5_path}: no such file")
    weights, layers = {}, []
    with h5py.File(h5_path, "r") as f:
        g = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in g.attrs:
            for name in map(_text, g.attrs["layer_names"]):
                layers.append(name)
                names = [_text(w) for w in g[name].attrs.get("weight_names", [])]
                bases = [w.split("/")[-1].removesuffix(":0") for w in names]
                nested = len(set(bases)) != len(bases)
                for w, base in zip(names, bases):
                    key = w.removesuffix(":0") if nested else base
                    weights[f"{name}/{key}"] = np.asarray(g[name][w])
        elif "layers" in g:
            _read_keras3(g["layers"], weights, layers)
        else:
            raise common.ConversionError(
                f"{h5_path}: expected a Keras HDF5 file (a 'layer_names' attribute at the root or under "
                f"'model_weights', or a Keras 3 'layers' group), found top-level keys {list(g.keys())}")
    return weights, layers


def _read_keras3(group, weights: dict, layers: list) -> None:
    for class_path in group:
        sub = group[class_path]
        if "vars" in sub:
            name = _text(sub["vars"].attrs.get("name", class_path))
            layers.append(name)
            n = len(sub["vars"])
            kind = next((k for k in _POSITIONAL if class_path.startswith(k)), None)
            slots = _POSITIONAL[kind][:n] if kind and n <= len(_POSITIONAL[kind]) else \
                tuple(f"vars/{i}" for i in range(n))
            for i, slot in enumerate(slots):
                weights[f"{name}/{slot}"] = np.asarray(sub["vars"][str(i)])
        if "layers" in sub:                     # nested model
            _read_keras3(sub["layers"], weights, layers)


def _keras_slot(norm: bool, slot: str):
    names = {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"} if norm \
        else {"kernel": "kernel", "bias": "bias"}
    return names[slot], None


def keras_resnet_name(layer: str) -> str:
    """Flax layer id -> keras-resnet / keras-retinanet layer name ('res2a/bn_branch2a' -> 'bn2a_branch2a')."""
    if layer.startswith("fpn/"):
        return layer[4:]
    if common.parse_head(layer) is not None:
        return layer                                    # classification_submodel/pyramid_classification_0
    if "/" not in layer:
        return layer                                    # conv1, bn_conv1
    block, part = layer.split("/")
    if part.startswith("bn_"):
        return f"bn{block[3:]}_{part[3:]}"
    return f"{block}_{part}"


def keras_applications_name(layer: str) -> str:
    """Flax layer id -> Keras applications name ('res3b/bn_branch2a' -> 'conv3_block2_1_bn')."""
    if layer in ("conv1", "bn_conv1"):
        return "conv1_conv" if layer == "conv1" else "conv1_bn"
    stage, block, part = common.parse_block(layer)
    digit = _APPLICATIONS_BRANCH[part.removeprefix("bn_")]
    return f"conv{stage}_block{block + 1}_{digit}_{'bn' if part.startswith('bn_') else 'conv'}"


def resnet50_from_keras_applications(h5_path: str):
    """`keras.applications.ResNet50` weights (.h5 or .weights.h5) -> (resnet.ResNet, variables).

    Caffe style, symmetric stem, conv biases, BatchNorm eps 1.001e-5; the top ('predictions') is ignored.
    module.apply(variables, images) -> {"C2".."C5"} on Keras' "caffe" preprocessing.
    """
    weights, _ = read_keras_weights(h5_path)
    module = resnet.ResNet50(style="caffe", stem="symmetric", bn_eps=1.001e-5, conv_bias=True)
    template = common.template_of(module)
    rules = common.make_rules(template, keras_applications_name, _keras_slot, "/")
    return module, common.strict_assemble(weights, rules, template, ignore=("predictions/",),
                                          where=h5_path)


def retinanet_from_keras(h5_path: str, heads: bool = False):
    """keras-retinanet / keras-resnet weights -> (fpn.ResNetFPN, variables), or (resnet.ResNet, variables)
    for a backbone-only file (no 'C5_reduced' layer), or with `heads=True` (retinanet.RetinaNet, variables)
    with the detection subnets too (`classification_submodel/pyramid_classification_{0..3}`,
    `.../pyramid_classification`, `regression_submodel/...`; K = outputs / 9). Its "cls_logits" are the
    logits of keras-retinanet's sigmoid output, in keras-retinanet's anchor order and box coding
    (`anchors_for_shape(hw, "keras")`, `decode_boxes(..., style="keras")`).

    The stem follows the file: keras-resnet 0.1.0 ('padding_conv1' layer) -> "pad3_same", else "same".
    Without `heads`, the detection subnets are ignored (logged); an ImageNet 'fc1000' always is.
    module.apply(variables, images) -> {"C2".."C5"[, "P3".."P7"]} on caffe preprocessing (BGR,
    mean-subtracted).
    """
    weights, layers = read_keras_weights(h5_path)
    stem = "pad3_same" if "padding_conv1" in layers else "same"
    kwargs = dict(style="caffe", stem=stem, bn_eps=1e-5, conv_bias=False)
    has_fpn = any(k.startswith("C5_reduced/") for k in weights)
    if heads:
        # Keras 3 files name nested layers without their submodel: put it back.
        weights = {(f"{k.split('_')[1]}_submodel/{k}" if k.startswith(RETINANET_HEADS[2:]) else k): v
                   for k, v in weights.items()}
        cls = weights.get("classification_submodel/pyramid_classification/kernel")
        if cls is None or not has_fpn:
            raise common.ConversionError(
                f"{h5_path}: heads=True needs a full keras-retinanet model (FPN layers and "
                f"'classification_submodel/pyramid_classification'); found has_fpn={has_fpn}, "
                f"classification output {'present' if cls is not None else 'missing'}")
        module = retinanet.RetinaNet50(p6_from="C5", num_classes=cls.shape[-1] // 9, num_anchors=9, **kwargs)
    else:
        module = fpn.ResNet50FPN(p6_from="C5", **kwargs) if has_fpn else resnet.ResNet50(**kwargs)
    template = common.template_of(module)
    rules = common.make_rules(template, keras_resnet_name, _keras_slot, "/")
    return module, common.strict_assemble(weights, rules, template,
                                          ignore=("fc1000/",) if heads else RETINANET_HEADS + ("fc1000/",),
                                          where=h5_path)
