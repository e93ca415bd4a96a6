"""A tiny CNN on in-memory images: engine smoke runs and tests (about 15 s on 2 CPU cores).

    python launch.py train --config configs/tiny.py --workdir runs/tiny
    python launch.py train --config configs/tiny.py:state --workdir runs/tiny_state  # per-example state
"""
from cervix_jax.train.config import base_config


def get_config(arg=None):
    args = [a for a in (arg or "").split(",") if a]
    unknown = [a for a in args if a != "state"]
    if unknown:
        raise ValueError(f"configs/tiny.py: unknown args {unknown}; expected from ['state']")
    c = base_config("tiny")
    c.data.name = "memory/64"
    c.data.pad_to = (16, 16)
    c.data.image_size = 16
    c.train.batch_size = 8
    c.train.epochs = 2
    c.train.log_every = 2
    c.train.checkpoint_every = 4
    c.explain.max_images = 8
    c.model.example_state = "state" in args
    return c
