"""Convert a RetinaNet checkpoint into a backbone checkpoint for the pyramid classifier.

    python -m cervix_jax.convert.cli SOURCE OUT_DIR --format keras-retinanet|torchvision-v1|torchvision-v2
    python launch.py train --config configs/pyramid.py:p3,p6,p7 \
        --config.model.backbone_checkpoint=OUT_DIR <the --config.model.* flags printed>

SOURCE: a keras-retinanet .h5 (full model or backbone + FPN), or a torchvision state dict as .pth/.pt
(read without torch, see `read_torch_file`), .safetensors (needs safetensors) or .npz. OUT_DIR gets
`state/` (an Orbax checkpoint of
{"frozen": ResNetFPN variables}) and `backbone.json` (the architecture, checked at load time).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import sys
import zipfile

import numpy as np

from cervix_jax.convert import keras as keras_convert
from cervix_jax.convert import torchvision as tv_convert
from cervix_jax.models import fpn

FORMATS = ("keras-retinanet", "torchvision-v1", "torchvision-v2")
ARCH_KEYS = ("style", "stem", "bn_eps", "conv_bias", "p6_from")


def read_state_dict(path: str) -> dict:
    """A flat {key: array or tensor} from .npz, .safetensors or .pth/.pt ('state_dict'/'model' unwrapped)."""
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file
        return load_file(path)
    if path.endswith((".pth", ".pt")):
        sd = read_torch_file(path)
        for key in ("state_dict", "model"):
            if isinstance(sd, dict) and isinstance(sd.get(key), dict):
                sd = sd[key]
        return sd
    raise ValueError(f"{path}: expected a .npz, .safetensors, .pth or .pt state dict")


_TORCH_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                 "BFloat16Storage": None, "LongStorage": np.int64, "IntStorage": np.int32,
                 "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
                 "BoolStorage": np.bool_}


class _TorchUnpickler(pickle.Unpickler):
    """Reads `torch.save`'s data.pkl allowing only tensors, storages and (ordered) dicts: no code runs."""

    def __init__(self, f, archive: zipfile.ZipFile, root: str, path: str):
        super().__init__(f)
        self.archive, self.root, self.path = archive, root, path

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _TORCH_DTYPES:
            if _TORCH_DTYPES[name] is None:
                raise pickle.UnpicklingError(f"{self.path}: {name} tensors are not supported; save float32")
            return np.dtype(_TORCH_DTYPES[name])
        raise pickle.UnpicklingError(f"{self.path}: expected a state dict of tensors, found a pickled "
                                     f"{module}.{name} (only tensors and dicts are read)")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"{self.path}: unknown persistent record {kind!r}")
        data = self.archive.read(f"{self.root}/data/{key}")
        return np.frombuffer(data, dtype=dtype.newbyteorder("<"), count=numel)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.array(view)


def read_torch_file(path: str) -> dict:
    """A `torch.save` zip file (torch >= 1.6) of tensors and dicts -> the same structure with NumPy arrays,
    without torch and without running pickled code."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: expected a torch.save zip archive (torch >= 1.6); found another format. "
                         f"Re-save it with torch.save(state_dict, path), or as .safetensors")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError(f"{path}: expected one '<name>/data.pkl' in the archive, found {pkl}")
        root = pkl[0].rsplit("/", 1)[0]
        order = f"{root}/byteorder"
        if order in archive.namelist() and archive.read(order).decode().strip() != "little":
            raise ValueError(f"{path}: big-endian torch files are not supported")
        with archive.open(pkl[0]) as f:
            return _TorchUnpickler(f, archive, root, path).load()


def convert(source: str, fmt: str, bn_eps: float | None = None):
    """(ResNetFPN module, variables) for a RetinaNet file in format `fmt` (see FORMATS)."""
    if fmt == "keras-retinanet":
        module, variables = keras_convert.retinanet_from_keras(source)
    elif fmt in ("torchvision-v1", "torchvision-v2"):
        module, variables = tv_convert.retinanet_from_torchvision(
            read_state_dict(source), version=fmt.split("-")[1], bn_eps=bn_eps)
    else:
        raise ValueError(f"--format: expected one of {FORMATS}, found {fmt!r}")
    if not isinstance(module, fpn.ResNetFPN):
        raise ValueError(f"{source}: holds a ResNet without FPN; the pyramid classifier needs a RetinaNet "
                         f"(ResNet50 + FPN) checkpoint")
    return module, variables


def main(argv=None) -> list[str]:
    """Runs the conversion; returns (and prints) the --config.model.* flags that match the checkpoint."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("source")
    p.add_argument("out_dir")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--bn-eps", type=float, default=None,
                   help="torchvision only; default 0.0 for v1 (COCO v1 weights), 1e-5 for v2")
    args = p.parse_args(argv)
    import orbax.checkpoint as ocp

    module, variables = convert(args.source, args.format, args.bn_eps)
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(os.path.join(out, "state"), {"frozen": variables})
    ckpt.wait_until_finished()
    arch = {"backbone": "resnet50", **{k: getattr(module, k) for k in ARCH_KEYS}}
    with open(os.path.join(out, "backbone.json"), "w") as f:
        json.dump({**arch, "source": os.path.abspath(args.source), "format": args.format}, f, indent=1)
    flags = [f"--config.model.{k}={v}" for k, v in arch.items()]
    print(f"wrote {out}; train with\n  --config.model.backbone_checkpoint={out} " + " ".join(flags))
    return flags


if __name__ == "__main__":
    main(sys.argv[1:])
