"""The config schema every `configs/*.py` starts from (big_vision style ml_collections).

`configs/<family>.py:get_config(arg)` calls `base_config()` and sets what differs. Keys are locked
after construction (`config.lock()`), so `--config.foo=1` with an unknown key fails at once naming
the key, and a value of the wrong type fails naming key and type. Model
families add their own keys under `config.model` (e.g. `levels` for "pyramid", `patch_size` and
`reg_lambda` for "patch") in `base_config(model=...)` below, never ad hoc.
"""
from __future__ import annotations

import ml_collections as mlc


def base_config(model: str = "tiny") -> mlc.ConfigDict:
    c = mlc.ConfigDict()
    c.seed = 0

    c.data = mlc.ConfigDict()
    c.data.name = "synthetic_cervix/tiny"   # tfds name[/config]; "cervix_folder"; "memory/<n>" (tests)
    c.data.data_dir = "~/.cache/cervix_jax/tfds"  # where tfds writes/reads array_record files
    c.data.manual_dir = ""                  # for cervix_folder: the user's folder or CSV
    c.data.label = "label"                  # target: the builder's "label", or "treatability" | "dysplasia"
    c.data.image_size = 192                 # longer border after resize (paper B: 1200)
    c.data.pad_to = (128, 192)              # fixed (H, W) after padding, for jit
    c.data.normalization = "unit"           # "unit" (0..1) | "caffe" (BGR, mean-subtracted) | "torch"
    c.data.test_fraction = 0.2
    c.data.val_fraction = 0.2               # carved from train, by group
    c.data.blur = 0                         # Gaussian blur ksize for TEST images only (paper B; 0 = none)
    c.data.with_masks = False               # batches carry ground-truth masks (explain/eval)
    c.data.split_seed = 0                   # group split; fixed across config.seed (paired comparisons)

    c.model = mlc.ConfigDict()
    c.model.name = model
    c.model.update(_model_defaults(model))

    c.train = mlc.ConfigDict()
    c.train.batch_size = 8                  # global batch
    c.train.epochs = 2
    c.train.optimizer = "adam"
    c.train.lr = 1e-3
    c.train.log_every = 10                  # steps
    c.train.checkpoint_every = 50           # steps; and always at the end
    c.train.keep = 3                        # last k checkpoints (+ the best)
    c.train.best_metric = "val_auc"         # checkpoint kept as best; early stopping watches it
    c.train.patience = 0                    # epochs without improvement before stopping (0 = off)

    c.parallel = mlc.ConfigDict()
    c.parallel.wrapper = "pmap"             # "pmap" | "shard_map"
    c.parallel.distributed = False          # call jax.distributed.initialize (flags/env)

    c.explain = mlc.ConfigDict()
    c.explain.methods = ("cam", "crm")
    c.explain.threshold = 0.2
    c.explain.split = "test"
    c.explain.max_images = 64

    c.sweep = mlc.ConfigDict()
    # ((dotted key, values), ...): the cartesian product, one workdir per point; e.g.
    # (("model.levels", ("p3", "p3,p6,p7")), ("seed", (0, 1, 2))). Seeds are averaged in the table.
    c.sweep.grid = ()
    c.sweep.fast = True                     # use the task's sweep_fast if any (paper B); False: ordinary runs
    c.lock()
    return c


# Keys under config.model per family (set by the family's owner).
_MODEL_DEFAULTS: dict[str, dict] = {
    "tiny": {"width": 8, "example_state": False},
    # paper B (configs/pyramid.py): see cervix_jax/train/task_pyramid.py and docs/models.md
    "pyramid": {
        "levels": "p3,p6,p7",           # level list or a paper head name (models.pyramid.parse_levels)
        "upsample": "nearest_legacy",   # | "bilinear"
        "backbone": "resnet50",         # | "tiny" (tests, runlocal)
        "style": "caffe",               # keras-retinanet (the authors' framework) | "torchvision"
        "stem": "same",                 # keras-resnet 0.2 | "pad3_same" (0.1) | "symmetric" (torchvision)
        "bn_eps": 1e-5,                 # torchvision COCO v1 weights: 0.0
        "conv_bias": False,
        "p6_from": "C5",                # torchvision v1: "P5"
        "backbone_checkpoint": "",      # folder from `python -m cervix_jax.convert.cli`
    },
    # paper A (configs/patch.py): see cervix_jax/train/task_patch.py and docs/patch_model.md
    # refit_weighting: what the iterative regulator is fit from, "raw" patch weights (the paper) or
    # "minmax" (a - min) / (max - min + 1e-6) (research notes 4.2: a flat map then gives no update).
    "patch": {"patch_size": 28, "aggregation": "mean", "mlp_hidden": (256, 64), "regulator": "iterative",
              "reg_lambda": 0.1, "eps_w": 1e-3, "eig_floor": 0.25, "refit_weighting": "raw"},
}


def _model_defaults(model: str) -> dict:
    """config.model keys of a family: `_MODEL_DEFAULTS`, or the task module's `DEFAULTS`."""
    if model == "retinanet":
        from cervix_jax.train.task_retinanet import DEFAULTS
        return dict(DEFAULTS)
    return _MODEL_DEFAULTS.get(model, {})
