"""Paper B: frozen RetinaNet ResNet50-FPN, chosen pyramid levels concatenated, GAP, dense(2), softmax.

    python launch.py train --config configs/pyramid.py:p3,p6,p7 --workdir /tmp/pyr
    python launch.py train --config configs/pyramid.py:p3p6p7,runlocal --workdir /tmp/pyr   # seconds, CPU

`arg` is a comma-separated list of levels (`p3,p6,p7`) or one of the paper's seven heads by name
(`p3`, `p4`, `p5`, `p6`, `p7`, `p3p6p7`, `p3-p7`), optionally followed by `runlocal` (tiny backbone on
synthetic_cervix/tiny at 128x192). No pretrained weights can be downloaded here: without
`--config.model.backbone_checkpoint=DIR` (made by `python -m cervix_jax.convert.cli`, which prints
the matching --config.model.* flags) the backbone is random-initialised.
"""
from cervix_jax.models import pyramid
from cervix_jax.train.config import base_config


# Model keys of the "pyramid" family; to move into cervix_jax.train.config._MODEL_DEFAULTS.
MODEL_DEFAULTS = {
    "levels": "p3,p6,p7",           # level list or a paper head name (pyramid.parse_levels)
    "upsample": "nearest_legacy",   # | "bilinear"
    "backbone": "resnet50",         # | "tiny" (tests, runlocal)
    "style": "caffe",               # keras-retinanet (the authors' framework) | "torchvision"
    "stem": "same",                 # keras-resnet 0.2 | "pad3_same" (0.1) | "symmetric" (torchvision)
    "bn_eps": 1e-5,                 # torchvision COCO v1 weights: 0.0
    "conv_bias": False,
    "p6_from": "C5",                # torchvision v1: "P5"
    "backbone_checkpoint": "",      # folder from `python -m cervix_jax.convert.cli`
}


def get_config(arg: str = "p3p6p7"):
    parts = [p for p in (arg or "p3p6p7").split(",") if p]
    runlocal = "runlocal" in parts
    levels = ",".join(p for p in parts if p != "runlocal") or "p3p6p7"
    pyramid.parse_levels(levels)            # fail early on a bad arg

    c = base_config("pyramid")
    c.data.image_size = 1200                # paper B: longer border 1200
    c.data.pad_to = (800, 1200)
    c.data.normalization = "unit"           # pixels in (0, 1)
    c.train.lr = 1e-6                       # paper B
    c.train.batch_size = 8
    c.train.epochs = 30

    with c.unlocked():                      # until base_config("pyramid") has these keys
        for key, value in MODEL_DEFAULTS.items():
            if key not in c.model:
                c.model[key] = value
    c.model.levels = levels
    c.sweep.grid = (("model.levels", tuple(pyramid.PAPER_HEADS)),)   # the paper's seven heads

    if runlocal:
        c.data.name = "synthetic_cervix/tiny"
        c.data.image_size = 192
        c.data.pad_to = (128, 192)
        c.train.epochs = 2
        c.train.lr = 1e-3
        c.model.backbone = "tiny"
    return c
