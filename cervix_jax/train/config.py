"""The config schema every `configs/*.py` starts from (big_vision style ml_collections).

`configs/<family>.py:get_config(arg)` calls `base_config(model=...)` and sets what differs. Keys are
locked after construction (`config.lock()`), so `--config.foo=1` with an unknown key fails at once
naming the key, and a value of the wrong type fails naming key and type. The keys under
`config.model` belong to the model family: its task module exports them as `DEFAULTS` (e.g.
`levels` in `train/task_pyramid.py`, `patch_size` and `reg_lambda` in `train/task_patch.py`).
"""
from __future__ import annotations

import ml_collections as mlc

from cervix_jax.train.task import defaults


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
    c.data.pixel_cache = ""                 # a folder: read pre-resized uint8 pixels (data/pixel_cache.py)

    c.model = mlc.ConfigDict()
    c.model.name = model
    c.model.dtype = "float32"               # compute dtype, "float32" | "bfloat16" (params stay float32)
    c.model.update(defaults(model))

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
    # ((dotted key, values), ...): the cartesian product, one workdir per point; "a+b" zips keys (one
    # value sets both, e.g. "seed+data.split_seed"). E.g.
    # (("model.levels", ("p3", "p3,p6,p7")), ("seed", (0, 1, 2))). Seeds are averaged in the table.
    c.sweep.grid = ()
    # "loop": one ordinary train + eval per point; "cached_heads": paper B's heads from cached features,
    # all points together (train/cached_heads.py), the points it cannot reproduce exactly left to the loop.
    c.sweep.trainer = "loop"
    # Reports written at the end of a sweep and by `launch.py report` (cervix_jax/reports/).
    c.sweep.reports = ("summary",)
    c.lock()
    return c



def load_config(spec: str) -> mlc.ConfigDict:
    """`get_config(arg)` of a config file named as on the command line: "configs/x.py[:arg]"."""
    import importlib.util
    from pathlib import Path

    file, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_loaded_config", file)
    if module_spec is None or not Path(file).is_file():
        raise FileNotFoundError(f"--config: no such config file {file!r}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


# ----------------------------------------------------------------------------------------------
# Validation: every value checked at parse time (launch.py), all problems reported at once.

SPLIT_NAMES = ("train", "val", "test")
NORMALIZATIONS = ("unit", "caffe", "torch")
OPTIMIZERS = ("adam", "sgd", "adamw")
WRAPPERS = ("pmap", "shard_map")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    import math
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(config) -> list[str]:
    """Every problem with the values of `config` (the keys are fixed by `base_config`), one line each:
    types, ranges (positive sizes, fractions in [0, 1), thresholds in [0, 1], odd blur kernels),
    names from a fixed set, and the model family's own keys. [] when the config is valid."""
    problems: list[str] = []

    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            node, *path = key.split(".")
            value = config[node]
            for p in path:
                value = value[p]
            problems.append(f"config.{key}={value!r}: expected {expected}")

    def positive_int(key, value):
        need(_is_int(value) and value > 0, key, "an integer > 0")

    def one_of(key, value, allowed):
        need(value in allowed, key, f"one of {tuple(allowed)}")

    need(_is_int(config.seed) and config.seed >= 0, "seed", "an integer >= 0")
    d = config.data
    need(isinstance(d.name, str) and bool(d.name), "data.name", "a tfds name[/config] or memory/<n>")
    memory = isinstance(d.name, str) and d.name.startswith("memory/")
    if memory:
        n = d.name.split("/", 1)[1]
        need(n.isascii() and n.isdigit() and int(n) > 0, "data.name", "memory/<n> with n an integer > 0")
    positive_int("data.image_size", d.image_size)
    pad = tuple(d.pad_to) if isinstance(d.pad_to, (tuple, list)) else ()
    need(len(pad) == 2 and all(_is_int(v) and v > 0 for v in pad), "data.pad_to",
         "(height, width), two integers > 0")
    if len(pad) == 2 and all(_is_int(v) and v > 0 for v in pad) and _is_int(d.image_size) and not memory:
        need(d.image_size <= max(pad), "data.image_size",
             f"at most the longer side of data.pad_to {pad} (the resized image must fit the padding)")
    one_of("data.normalization", d.normalization, NORMALIZATIONS)
    for key in ("test_fraction", "val_fraction"):
        need(_is_num(d[key]) and 0 <= d[key] < 1, f"data.{key}", "a fraction in [0, 1)")
    need(_is_int(d.blur) and (d.blur == 0 or (d.blur > 0 and d.blur % 2 == 1)), "data.blur",
         "0 (no blur) or an odd Gaussian kernel size > 0")
    need(isinstance(d.label, str) and bool(d.label), "data.label", "a label name such as 'label'")
    need(_is_int(d.split_seed) and d.split_seed >= 0, "data.split_seed", "an integer >= 0")

    t = config.train
    for key in ("batch_size", "epochs", "log_every", "checkpoint_every", "keep"):
        positive_int(f"train.{key}", t[key])
    one_of("train.optimizer", t.optimizer, OPTIMIZERS)
    need(_is_num(t.lr) and t.lr > 0, "train.lr", "a finite number > 0")
    need(isinstance(t.best_metric, str) and t.best_metric.startswith("val_"), "train.best_metric",
         "a validation metric name such as 'val_auc'")
    need(_is_int(t.patience) and t.patience >= 0, "train.patience", "an integer >= 0 (0 = off)")
    one_of("parallel.wrapper", config.parallel.wrapper, WRAPPERS)

    e = config.explain
    from cervix_jax.explain.registry import REGISTRY
    import cervix_jax.explain  # noqa: F401  (registers every method)
    methods = tuple(e.methods) if isinstance(e.methods, (tuple, list)) else None
    need(methods is not None and all(m in REGISTRY for m in methods), "explain.methods",
         f"a tuple of names from {tuple(sorted(REGISTRY))}")
    need(_is_num(e.threshold) and 0 <= e.threshold <= 1, "explain.threshold", "a number in [0, 1]")
    one_of("explain.split", e.split, SPLIT_NAMES)
    positive_int("explain.max_images", e.max_images)

    grid = config.sweep.grid
    ok = isinstance(grid, (tuple, list)) and all(
        isinstance(g, (tuple, list)) and len(g) == 2 and isinstance(g[0], str)
        and isinstance(g[1], (tuple, list)) and len(g[1]) > 0 for g in grid)
    need(ok, "sweep.grid", "((dotted key, (value, ...)), ...)")
    from cervix_jax import reports
    from cervix_jax.train.sweep import TRAINERS
    one_of("sweep.trainer", config.sweep.trainer, tuple(sorted(TRAINERS)))
    known = tuple(sorted(reports._REGISTRY))
    need(isinstance(config.sweep.reports, (tuple, list)) and all(r in known for r in config.sweep.reports),
         "sweep.reports", f"a tuple of report names from {known}")

    problems += _validate_model(config)
    return problems


def _validate_model(config) -> list[str]:
    m, problems = config.model, []

    def need(ok, key, expected):
        if not ok:
            problems.append(f"config.model.{key}={m[key]!r}: expected {expected}")

    if m.name == "tiny":
        need(_is_int(m.width) and m.width > 0, "width", "an integer > 0")
    elif m.name == "pyramid":
        from cervix_jax.models import fpn, pyramid, resnet
        from cervix_jax.train.task_pyramid import BACKBONES
        try:
            pyramid.parse_levels(m.levels)
        except (ValueError, TypeError) as err:
            problems.append(f"config.model.levels={m.levels!r}: {err}")
        need(m.upsample in pyramid.UPSAMPLE, "upsample", f"one of {pyramid.UPSAMPLE}")
        need(m.backbone in BACKBONES, "backbone", f"one of {tuple(sorted(BACKBONES))}")
        need(m.style in resnet.STYLES, "style", f"one of {resnet.STYLES}")
        need(m.stem in resnet.STEMS, "stem", f"one of {resnet.STEMS}")
        need(_is_num(m.bn_eps) and m.bn_eps >= 0, "bn_eps", "a number >= 0")
        need(m.p6_from in fpn.P6_SOURCES, "p6_from", f"one of {fpn.P6_SOURCES}")
        problems += _stage1_problems(config)
    elif m.name == "patch":
        from cervix_jax.models.patch import AGGREGATIONS, CONV_IMPLS
        from cervix_jax.regulator import SPATIAL_REDUCTIONS
        from cervix_jax.train.task_patch import REFIT_WEIGHTINGS, REGULATORS
        need(_is_int(m.patch_size) and m.patch_size > 0, "patch_size", "an integer > 0")
        pad = tuple(config.data.pad_to)
        if _is_int(m.patch_size) and m.patch_size > 0 and len(pad) == 2 and all(_is_int(v) for v in pad):
            need(pad[0] % m.patch_size == 0 and pad[1] % m.patch_size == 0, "patch_size",
                 f"a divisor of both sides of data.pad_to {pad}")
        need(m.aggregation in AGGREGATIONS, "aggregation", f"one of {AGGREGATIONS}")
        need(isinstance(m.mlp_hidden, (tuple, list)) and all(_is_int(v) and v > 0 for v in m.mlp_hidden),
             "mlp_hidden", "a tuple of integers > 0")
        wh = m.weight_hidden
        need(isinstance(wh, (tuple, list)) and all(_is_int(v) and v > 0 for v in wh), "weight_hidden",
             "a tuple of integers > 0")
        need(m.spatial_reduction in SPATIAL_REDUCTIONS, "spatial_reduction", f"one of {SPATIAL_REDUCTIONS}")
        need(m.regulator in REGULATORS, "regulator", f"one of {REGULATORS}")
        need(_is_num(m.reg_lambda) and m.reg_lambda >= 0, "reg_lambda", "a number >= 0")
        need(_is_num(m.eps_w) and m.eps_w > 0, "eps_w", "a number > 0")
        need(_is_num(m.eig_floor) and m.eig_floor > 0, "eig_floor", "a number > 0")
        need(m.get("refit_weighting", "raw") in REFIT_WEIGHTINGS, "refit_weighting",
             f"one of {REFIT_WEIGHTINGS}")
        need(m.get("conv_impl", "auto") in CONV_IMPLS, "conv_impl", f"one of {CONV_IMPLS}")
    elif m.name == "baseline":
        from cervix_jax.models.baselines import ARCHS
        from cervix_jax.train.task_baseline import CROPS
        need(m.arch in ARCHS, "arch", f"one of {ARCHS}")
        need(m.crop in CROPS, "crop", f"one of {CROPS}")
        size = tuple(m.input_size) if isinstance(m.input_size, (tuple, list)) else ()
        need(len(size) == 2 and all(_is_int(v) and v >= 0 for v in size), "input_size",
             "(h, w) integers > 0, or (0, 0) for the paper's size")
        need(_is_num(m.width) and m.width > 0, "width", "a number > 0")
        need(_is_int(m.fc_width) and m.fc_width > 0, "fc_width", "an integer > 0")
        need(_is_int(m.crop_size) and (m.crop_size > 0 or m.crop != "center"), "crop_size",
             "an integer > 0 (pixels) for crop 'center'")
        need(_is_num(m.box_margin) and m.box_margin >= 0, "box_margin", "a number >= 0")
        need(_is_int(m.freeze_blocks) and 0 <= m.freeze_blocks <= 5, "freeze_blocks", "an integer in 0..5")
        need(m.freeze_blocks == 0 or m.arch == "vgg16", "freeze_blocks", "0 unless arch is 'vgg16'")
    return problems


def _stage1_problems(config) -> list[str]:
    """A pyramid head on a stage-1 RetinaNet run (model.backbone_checkpoint = its workdir) must see
    pixels normalised as that run's were and, on the same dataset, the same split (stage 1 never sees
    the test women); model.backbone_random needs such a run (its architecture)."""
    from cervix_jax.train.task_retinanet import stage1_config
    m = config.model
    stage1 = stage1_config(m.backbone_checkpoint) if m.backbone_checkpoint else None
    problems = []
    if stage1 is not None and stage1.data.normalization != config.data.normalization:
        problems.append(f"config.data.normalization={config.data.normalization!r}: expected "
                        f"{stage1.data.normalization!r}, the normalization of the stage-1 run "
                        f"{m.backbone_checkpoint} (its config.json)")
    if (stage1 is not None and stage1.data.name == config.data.name
            and stage1.data.split_seed != config.data.split_seed):
        problems.append(f"config.data.split_seed={config.data.split_seed}: expected "
                        f"{stage1.data.split_seed}, the split of the stage-1 run {m.backbone_checkpoint} "
                        f"on the same dataset {config.data.name!r} (its training women would include "
                        f"this split's test women); train stage 1 on this split")
    if m.get("backbone_random", False) and m.backbone_checkpoint and stage1 is None:
        problems.append(f"config.model.backbone_random=True: expected model.backbone_checkpoint to be a "
                        f"stage-1 run's workdir (configs/retinanet.py), found {m.backbone_checkpoint!r}")
    return problems
