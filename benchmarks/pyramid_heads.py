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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--hw", default="128x192")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    h, w = map(int, args.hw.split("x"))
    rng = np.random.default_rng(0)
    data = {"image": rng.uniform(0, 1, (args.n, h, w, 3)).astype(np.float32),
            "label": rng.integers(0, 2, args.n).astype(np.int32), "weight": np.ones(args.n, np.float32),
            "id": np.arange(args.n, dtype=np.int32)}
    batches = [{k: v[i:i + args.batch] for k, v in data.items()} for i in range(0, args.n, args.batch)]
    steps = args.epochs * len(batches)
    heads = list(pyramid.PAPER_HEADS)

    def task_for(levels):
        c = pyramid_config.get_config(levels)
        c.model.backbone = args.backbone
        return task_pyramid.make(c.model)

    frozen = task_for("p3").init(jax.random.PRNGKey(0), (h, w, 3))["frozen"]
    tx = optax.adam(1e-3)

    t0 = time.perf_counter()
    for name in heads:
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
    out = feature_cache.train_heads(cache, [pyramid.PAPER_HEADS[n] for n in heads], [0], steps=steps,
                                    lr=1e-3, batch_size=args.batch)
    jax.block_until_ready([o["params"] for o in out.values()])
    cached = time.perf_counter() - t0
    print(f"device: {jax.devices()[0].device_kind}; backbone {args.backbone}, {args.n} images {h}x{w}, "
          f"batch {args.batch}, {steps} steps per head, 7 heads")
    print("| method | seconds | speed-up |\n|---|---|---|")
    print(f"| ordinary (7 x Task loss on full maps) | {ordinary:.1f} | 1.0 |")
    print(f"| cache (extract {t1 - t0:.1f} s + vmapped heads {cached - (t1 - t0):.1f} s) | {cached:.1f} | "
          f"{ordinary / cached:.1f} |")


if __name__ == "__main__":
    main()
