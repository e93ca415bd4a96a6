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

    c.model = mlc.ConfigDict()
    c.model.name = model
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
    # ((dotted key, values), ...): the cartesian product, one workdir per point; e.g.
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
