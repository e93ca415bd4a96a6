"""Paper B: frozen RetinaNet ResNet50-FPN, chosen pyramid levels concatenated, GAP, dense(2), softmax.

    python launch.py train --config configs/pyramid.py:p3,p6,p7 --workdir /tmp/pyr
    python launch.py train --config configs/pyramid.py:p3p6p7,runlocal --workdir /tmp/pyr   # seconds, CPU

`arg` is a comma-separated list of levels (`p3,p6,p7`) or one of the paper's seven heads by name
(`p3`, `p4`, `p5`, `p6`, `p7`, `p3p6p7`, `p3-p7`), optionally with modifiers:
  runlocal  tiny backbone on synthetic_cervix/tiny at 128x192 (tests, smoke runs)
  small     the real ResNet50-FPN on synthetic_cervix/demo (192 images) at 128x192, head lr 1e-3, 30 epochs
  sweep     config.sweep.grid = the seven heads x seeds (0, 1, 2) x test blur (0, 19, 49): paper B's
            Tables 2 and 4. Trained by the cached-feature trainer (train/cached_heads.py: one backbone
            pass, all 21 heads in one vmapped program; --config.sweep.trainer=loop runs the points one
            by one), then the reports summary, paper_b_table and paper_b_maps (CAM vs CRM per head,
            cervix_jax/reports/). Below
            1200 px the blur kernels are scaled by longer border / 1200 to the nearest odd size
            (`scaled_blur`: 19 -> 3 and 49 -> 7 at 192 px); the grid holds the kernel sizes used.

    python launch.py sweep --config configs/pyramid.py:sweep,small --workdir runs/paper_b_sweep
        2 shared CPU cores (other jobs running): 51 s wall for all 63 points (docs/results/paper_b.md)
    python launch.py sweep --config configs/pyramid.py:sweep --workdir runs/paper_b_full
        GPU-sized (synthetic_cervix/paper_b: 1,033 images at 800x1200, lr 1e-6); not run here
    python launch.py sweep --config configs/pyramid.py:sweep,runlocal --workdir /tmp/pyr_sweep  # tiny, ~45 s

Stage 2 on a stage-1 RetinaNet trained here (configs/retinanet.py): `--config.model.backbone_checkpoint=
<its workdir> --config.data.normalization=caffe` (its best checkpoint's backbone + FPN; the architecture
comes from that run's config; a normalization other than the run's is refused). The control arm adds
`--config.model.backbone_random=True`: the same architecture, random-initialised.

No pretrained weights can be downloaded here: without `--config.model.backbone_checkpoint=DIR` (made
by `python -m cervix_jax.convert.cli`, which prints the matching --config.model.* flags) the backbone is
random-initialised (the same for every seed).
"""
from cervix_jax.models import pyramid
from cervix_jax.train.config import base_config

PAPER_BLUR = (0, 19, 49)                # paper B: Gaussian kernels 19x19 and 49x49 on 1200-px images
MODIFIERS = ("runlocal", "small", "sweep")


def scaled_blur(ksize: int, longer_border: int) -> int:
    """A kernel size of paper B (for a longer border of 1200 px) scaled to `longer_border`, rounded to
    the nearest odd size (0 stays 0): 19 -> 3 and 49 -> 7 at 192 px."""
    if ksize == 0:
        return 0
    return max(3, 2 * round((ksize * longer_border / 1200 - 1) / 2) + 1)


def get_config(arg: str = "p3p6p7"):
    parts = [p for p in (arg or "p3p6p7").split(",") if p]
    runlocal, small, sweep = ("runlocal" in parts), ("small" in parts), ("sweep" in parts)
    levels = ",".join(p for p in parts if p not in MODIFIERS) or "p3p6p7"
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
    # CAM, and CRM in paper B's score space (Section 3.3 "using Equation (1)": linear scores of the
    # pooled features, no softmax; `crm_linear`) beside CRM of the softmax outputs (`crm`)
    c.explain.methods = ("cam", "crm_linear", "crm")
    c.sweep.grid = (("model.levels", tuple(pyramid.PAPER_HEADS)),)   # the paper's seven heads
    c.sweep.trainer = "cached_heads"        # frozen backbone: every head from one backbone pass
    c.sweep.reports = ("summary", "paper_b_table", "paper_b_maps")

    if runlocal:
        c.data.name = "synthetic_cervix/tiny"
        c.data.image_size = 192
        c.data.pad_to = (128, 192)
        c.train.epochs = 2
        c.train.lr = 1e-3
        c.model.backbone = "tiny"
    if small:                               # the real ResNet50-FPN, small images, 2 CPU cores
        c.data.name = "synthetic_cervix/demo"
        c.data.image_size = 192
        c.data.pad_to = (128, 192)
        c.train.epochs = 30
        c.train.lr = 1e-3                   # a random backbone's features: 1e-6 would leave the head at init
    if sweep:                               # seven heads x three seeds x three blur levels
        blur = tuple(scaled_blur(k, c.data.image_size) for k in PAPER_BLUR)
        c.sweep.grid = (("model.levels", tuple(pyramid.PAPER_HEADS)), ("seed", (0, 1, 2)),
                        ("data.blur", blur))
    return c
