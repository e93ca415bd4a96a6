"""Paper B, stage 1: the RetinaNet detector trained from scratch on the cervix box (the AVE setting).

    python launch.py train --config configs/retinanet.py:runlocal --workdir /tmp/ret    # tiny, seconds
    python launch.py eval  --config configs/retinanet.py:runlocal --workdir /tmp/ret    # + AP, IoU, overlays
    python launch.py train --config configs/retinanet.py:cpu --workdir runs/retinanet_cpu   # <= 20 min
    python launch.py train --config configs/retinanet.py:demo --workdir runs/demo_stage1    # make demo
    python launch.py train --config configs/retinanet.py --workdir runs/retinanet_full  # a GPU

One box per image (the cervix mask's bounding box, `data.with_masks`), labelled with the treatability
class; the image-level score is the "not treatable" probability of the top-scoring anchor
(`model.score_rule`, see cervix_jax/detection/postprocess.py:image_scores). BatchNorm trains (batch
statistics synchronised over devices). Stage 2 (configs/pyramid.py) takes the run's workdir as its frozen
backbone: `--config.model.backbone_checkpoint=<this workdir>` (the architecture comes from this run's
config.json; stage 2 must normalise pixels as this run did, "caffe", which config validation checks);
adding `--config.model.backbone_random=True` keeps the architecture with random weights (the control).
On the same dataset stage 2 must use this run's `data.split_seed` (validation refuses another: its
test women would be among this run's training women). The whole paper over several splits (stage 1
per split, both backbones, CAM vs CRM, each claim's verdict): `python -m
cervix_jax.reports.paper_b_evidence` (docs/results/paper_b.md).

Variants (`arg`, comma-separated):
  (none)    the full config: ResNet50-FPN (width 64, FPN 256, heads 256 x 4), images padded to 800 x 1200
            (synthetic_cervix/paper_b, longer border 1200), batch 16, bf16 compute (float32 parameters,
            BatchNorm statistics and losses), Adam 1e-4, 25 epochs (~1,600 steps of 16 on 620 training
            images). Cost by a layer-by-layer FLOP count (convolutions, 2 FLOP per MAC, train step = 3 x
            forward): 374 GFLOP forward per 800 x 1200 image (backbone 148, FPN 33, the two heads 194), so
            ~1.1 TFLOP per trained image and ~17 PFLOP for 620 x 25 images. One H100 (989 TFLOP/s dense
            bf16) at the 10-25 % of peak that XLA convnets with many small layers reach: 70-170 s of
            compute, plus 1-3 min compile and ~10 s to generate the data: about 5 minutes. Not run here.
  cpu       2 CPU cores: 128 x 192 images (synthetic_cervix/demo: 122 training, 30 val, 40 test images),
            ResNet50 stages (3, 4, 6, 3) at width 16 (a quarter), FPN 64 and heads 64 wide and 2 deep,
            anchors scaled by 0.5 (16..256 px for a 48-102 px cervix box), batch 8, float32, Adam 1e-3,
            60 epochs (900 steps). Reduced from the full config: image size (x39 fewer pixels), backbone
            width (x4), FPN and head width (x4), head depth (4 -> 2). Measured on 2 cores shared with
            two other training jobs and a test suite (load average 6-12): train 1,147 CPU-s (45.3 min
            wall at 42 % of a core), `launch.py eval` 100 CPU-s; on 2 idle cores at most ~19 min (its
            CPU seconds on one core). Test split vs the same network random-initialised (step 0):
            cervix box AP50 0.547 vs 0.000 (AP 0.384 vs 0.000, top-box IoU 0.88 vs 0.05); val AUC 0.841
            (best of 60 epochs, epoch 24) vs 0.519; test AUC 0.425 vs 0.513. It finds the cervix; its
            class score does not carry to the test images (the best-on-val checkpoint fits 30 val
            images). The P3+P6+P7 head on its frozen backbone: test AUC 0.581 vs 0.521 on the random
            copy (paired difference +0.06, 95 % bootstrap over images [-0.27, 0.38]: undecided).
  demo      `make demo`'s stage 1: the cpu variant with one bottleneck block per stage ("tiny" backbone,
            width 16, FPN/heads 64 x 2) and 15 epochs (225 steps). Measured on 2 cores shared with two
            other training jobs and a test suite (load average 6-9): train 258 CPU-s (12.9 min wall at
            33 % of a core), `launch.py eval` 77 CPU-s; on the 2 cores nearly idle (load average < 2):
            train 156 s + eval 54 s wall, 3.5 min, same numbers. Test split (40 images): AUC 0.632,
            cervix box AP50 0.650, AP 0.509, mean IoU of the top box 0.88; the P3+P6+P7 head on its
            frozen backbone: test AUC 0.749 vs 0.325 on the same architecture random-initialised
            (configs/demo.py, README "Quick start").
  runlocal  tiny backbone (one block per stage, width 4, FPN 8, heads 8 x 1) on synthetic_cervix/tiny at
            128 x 192, 2 epochs: tests and smoke runs.
"""
from cervix_jax.train.config import base_config

MODIFIERS = ("runlocal", "cpu", "demo")
DEMO_EPOCHS = 15


def get_config(arg: str = ""):
    parts = [p for p in (arg or "").split(",") if p]
    bad = [p for p in parts if p not in MODIFIERS]
    if bad:
        raise ValueError(f"configs/retinanet.py: unknown variant(s) {bad}; expected some of {MODIFIERS}")
    c = base_config("retinanet")
    c.data.name = "synthetic_cervix/paper_b"
    c.data.image_size = 1200
    c.data.pad_to = (800, 1200)
    c.data.normalization = "caffe"          # keras-retinanet's preprocessing (BGR, mean-subtracted)
    c.data.with_masks = True                # the cervix mask gives the ground-truth box
    c.train.batch_size = 16
    c.train.epochs = 25
    c.train.lr = 1e-4
    c.train.best_metric = "val_auc"
    c.model.dtype = "bfloat16"
    c.explain.methods = ("gradcam", "integrated_gradients")

    if "cpu" in parts or "demo" in parts:
        c.data.name = "synthetic_cervix/demo"
        c.data.image_size = 192
        c.data.pad_to = (128, 192)
        c.train.batch_size = 8
        c.train.epochs = 60
        c.train.lr = 1e-3
        c.model.dtype = "float32"
        c.model.width = 16
        c.model.feature_size = 64
        c.model.head_width = 64
        c.model.head_depth = 2
        c.model.anchor_scale = 0.5
    if "demo" in parts:                     # make demo's stage 1: one block per stage, fewer epochs
        c.model.backbone = "tiny"
        c.train.epochs = DEMO_EPOCHS
        c.train.log_every = 5
    if "runlocal" in parts:
        c.data.name = "synthetic_cervix/tiny"
        c.data.image_size = 192
        c.data.pad_to = (128, 192)
        c.train.batch_size = 8
        c.train.epochs = 2
        c.train.lr = 1e-3
        c.model.dtype = "float32"
        c.model.backbone = "tiny"
        c.model.width = 4
        c.model.feature_size = 8
        c.model.head_width = 8
        c.model.head_depth = 1
        c.model.anchor_scale = 0.5
    return c
