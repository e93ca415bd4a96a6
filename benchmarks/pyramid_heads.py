"""Paper B's seven heads: feature cache + one vmapped program vs seven ordinary Task trainings.

    .venv/bin/python benchmarks/pyramid_heads.py                       # ResNet50-FPN, 16 images 128x192
    .venv/bin/python benchmarks/pyramid_heads.py --backbone tiny       # seconds

Ordinary: for each head, jit(grad(Task.loss)) + Adam on full images, `epochs` passes (the backbone runs
every step). Cached: `feature_cache.extract` once + `train_heads` for all seven heads in one program.
Times include compilation (each ordinary head compiles its own step, as a real sweep does).
"""
import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs"))
import pyramid as pyramid_config  # noqa: E402

from cervix_jax.models import pyramid  # noqa: E402
from cervix_jax.train import feature_cache, task_pyramid  # noqa: E402


def run(backbone: str, n: int, hw: tuple[int, int], batch: int, epochs: int,
        init=None, heads: int = 7) -> tuple[float, float, float]:
    """(ordinary seconds, feature extraction seconds, cached total seconds), compilation included.
    `init(task, image_shape)` replaces `task.init` for the frozen backbone (benchmarks/suite.py);
    `heads`: the first that many of the paper's seven."""
    h, w = hw
    rng = np.random.default_rng(0)
    data = {"image": rng.uniform(0, 1, (n, h, w, 3)).astype(np.float32),
            "label": rng.integers(0, 2, n).astype(np.int32), "weight": np.ones(n, np.float32),
            "id": np.arange(n, dtype=np.int32)}
    batches = [{k: v[i:i + batch] for k, v in data.items()} for i in range(0, n, batch)]
    steps = epochs * len(batches)
    names = list(pyramid.PAPER_HEADS)[:heads]

    def task_for(levels):
        c = pyramid_config.get_config(levels)
        c.model.backbone = backbone
        return task_pyramid.make(c.model)

    init = init or (lambda task, shape: task.init(jax.random.PRNGKey(0), shape))
    frozen = init(task_for("p3"), (h, w, 3))["frozen"]
    tx = optax.adam(1e-3)

    t0 = time.perf_counter()
    for name in names:
        task = task_for(name)
        params = task.init_params(jax.random.PRNGKey(0))
        opt = tx.init(params)

        @jax.jit
        def step(params, opt, batch):
            grads = jax.grad(lambda q: task.loss(q, frozen, batch, None, None)[0])(params)
            updates, opt = tx.update(grads, opt, params)
            return optax.apply_updates(params, updates), opt

        for t in range(steps):
            params, opt = step(params, opt, {k: jnp.asarray(v) for k, v in batches[t % len(batches)].items()})
        jax.block_until_ready(params)
    ordinary = time.perf_counter() - t0

    t0 = time.perf_counter()
    cache = feature_cache.extract(task_for("p3"), frozen, batches)
    t1 = time.perf_counter()
    out = feature_cache.train_heads(cache, [pyramid.PAPER_HEADS[n] for n in names], [0], steps=steps,
                                    lr=1e-3, batch_size=batch)
    jax.block_until_ready([o["params"] for o in out.values()])
    cached = time.perf_counter() - t0
    return ordinary, t1 - t0, cached


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--hw", default="128x192")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    h, w = map(int, args.hw.split("x"))
    ordinary, extract, cached = run(args.backbone, args.n, (h, w), args.batch, args.epochs)
    steps = args.epochs * -(-args.n // args.batch)
    print(f"device: {jax.devices()[0].device_kind}; backbone {args.backbone}, {args.n} images {h}x{w}, "
          f"batch {args.batch}, {steps} steps per head, 7 heads")
    print("| method | seconds | speed-up |\n|---|---|---|")
    print(f"| ordinary (7 x Task loss on full maps) | {ordinary:.1f} | 1.0 |")
    print(f"| cache (extract {extract:.1f} s + vmapped heads {cached - extract:.1f} s) | {cached:.1f} | "
          f"{ordinary / cached:.1f} |")


if __name__ == "__main__":
    main()
