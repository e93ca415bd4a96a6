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




def get_config(arg: str = "p3p6p7"):
    parts = [p for p in (arg or "p3p6p7").split(",") if p]
    runlocal = "runlocal" in parts
    levels = ",".join(p for p in parts if p != "runlocal") or "p3p6p7"
    pyramid.parse_levels(levels)            # fail early on a bad arg

    c = base_config("pyramid")
    c.data.name = "synthetic_cervix/paper_b"
    c.data.image_size = 1200                # paper B: longer border 1200
    c.data.pad_to = (800, 1200)
    c.data.normalization = "unit"           # pixels in (0, 1)
    c.train.lr = 1e-6                       # paper B
    c.train.batch_size = 8
    c.train.epochs = 30

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
