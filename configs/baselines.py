"""Paper A's Table 1 baselines (Zhang et al., AAAI-21): whole-image CNNs, Crop-k and a box crop.

    python launch.py train --config configs/baselines.py:vgg16 --workdir runs/vgg16          # GPU-sized
    python launch.py train --config configs/baselines.py:lenet,cpu --workdir runs/lenet_cpu
    python launch.py sweep --config configs/baselines.py:table1_free,cpu --workdir runs/table1_free
    python launch.py sweep --config configs/baselines.py:table1_crop,cpu --workdir runs/table1_crop
    python launch.py sweep --config configs/baselines.py:table1_box,cpu --workdir runs/table1_box

Comma-separated args:
- an architecture: lenet (Vasudha'18) | caffenet (Xu'17) | vgg16 | inception (default vgg16);
- a crop: crop (Crop-k: the centred k x k box; k chosen on validation among the three CROP_SIZES by
  the table1_crop sweep) | box (the Hu'19 analogue: the cervix box, by default the ground-truth mask's
  box, an oracle upper bound; `--config.model.box_source=boxes.npz` takes a detector's boxes);
- fz1..fz4: VGG16 with conv blocks 1..k frozen (Table 1's FZ rows; give the torchvision vgg16 state
  dict with `--config.model.checkpoint=vgg16.pth`, without one the frozen blocks are random);
- cpu: CPU-sized (synthetic_cervix/evidence, 480 images of 96 x 144, narrower networks on smaller
  inputs, 40 epochs); without it the data and networks are the paper's size (1176 px, GPU-sized);
- table1_free | table1_crop | table1_box: the sweeps of Table 1's rows (architectures x seeds that
  vary the split too; table1_crop adds the three crop sizes).
Inputs are downsampled to each network's input size (antialiased), as those papers did.
"""
from __future__ import annotations

from cervix_jax.models.baselines import ARCHS
from cervix_jax.train.config import base_config

CROP_SIZES = {"gpu": (600, 800, 1000), "cpu": (48, 64, 80)}   # Crop-k candidates, pixels of pad_to
SEEDS = (0, 1, 2, 3, 4)
SWEEPS = ("table1_free", "table1_crop", "table1_box")


def get_config(arg: str | None = None):
    args = [a for a in (arg or "").split(",") if a]
    known = set(ARCHS) | {"crop", "box", "fz1", "fz2", "fz3", "fz4", "cpu"} | set(SWEEPS)
    unknown = [a for a in args if a not in known]
    if unknown:
        raise ValueError(f"configs/baselines.py: unknown args {unknown}; expected from {sorted(known)}")
    cpu = "cpu" in args
    c = base_config("baseline")
    c.data.label = "dysplasia"
    c.data.normalization = "torch"           # torchvision's, as the converted vgg16 expects
    c.train.best_metric = "val_auc"
    c.train.patience = 20
    if cpu:
        c.data.name = "synthetic_cervix/evidence"
        c.data.image_size = 144
        c.data.pad_to = (96, 144)
        c.train.epochs = 40
        c.train.lr = 3e-4
        c.train.batch_size = 16
        c.train.patience = 10
        c.train.log_every = 20
        c.explain.methods = ()
    else:
        c.data.name = "synthetic_cervix/paper_a"
        c.data.image_size = 1176
        c.data.pad_to = (1176, 1176)
        c.train.epochs = 150
        c.train.lr = 1e-5
        c.train.batch_size = 8
        c.explain.methods = ("gradcam",)

    arch = next((a for a in args if a in ARCHS), "vgg16")
    c.model.arch = arch
    # input_size (0, 0): each network's paper input, capped at the image's shorter side (96 on CPU)
    if cpu:
        c.model.width = 0.25
        c.model.fc_width = 256

    sizes = CROP_SIZES["cpu" if cpu else "gpu"]
    if "crop" in args or "table1_crop" in args:
        c.model.crop = "center"
        c.model.crop_size = sizes[1]
    if "box" in args or "table1_box" in args:
        c.model.crop = "box"
        c.data.with_masks = True              # the oracle box comes from the cervix mask
    fz = [int(a[2:]) for a in args if a.startswith("fz")]
    if fz:
        if arch != "vgg16":
            raise ValueError(f"configs/baselines.py: fz{fz[0]} freezes VGG16 blocks; found arch {arch!r}")
        c.model.freeze_blocks = fz[0]

    seeds = ("seed+data.split_seed", SEEDS)        # zipped: run k has init seed k and split k
    if any(a in SWEEPS for a in args):
        c.sweep.reports = ("summary", "paper_a_table1")
    if "table1_free" in args or "table1_box" in args:
        c.sweep.grid = (("model.arch", ARCHS), seeds)
    if "table1_crop" in args:
        c.sweep.grid = (("model.arch", ARCHS), ("model.crop_size", sizes), seeds)
    return c
