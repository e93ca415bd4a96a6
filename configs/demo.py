"""The README's demo: build the synthetic dataset (synthetic_cervix/tiny, 48 images), train,
evaluate, explain, in one workdir.

    python launch.py demo --config configs/demo.py --workdir runs/demo          # make demo
    python launch.py demo --config configs/demo.py:pyramid --workdir runs/demo  # paper B's head

The model family is the one argument (`tiny` until the lead settles on `pyramid`, paper B's
classifier with a small input and a random backbone). Target: under 10 minutes end to end on
2 CPU cores; leaves eval/metrics.json, eval/roc.png, eval/scores.png, eval/curves.png and
explain/test/ (CAM and CRM maps, overlays, grids) to look at.
"""
from cervix_jax.train.config import base_config


def get_config(arg=None):
    c = base_config(arg or "tiny")
    c.data.name = "synthetic_cervix/tiny"
    c.data.image_size = 96
    c.data.pad_to = (64, 96)
    c.data.with_masks = False
    c.train.batch_size = 8
    c.train.epochs = 15
    c.train.lr = 3e-3
    c.train.log_every = 5
    c.train.checkpoint_every = 10
    c.train.patience = 0                  # the 9-image val split is too noisy to stop on
    c.explain.max_images = 16
    if c.model.name == "tiny":
        c.model.width = 16
    return c
