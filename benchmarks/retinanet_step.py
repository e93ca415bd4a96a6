"""RetinaNet stage-1 train step throughput (images/s), with XLA's FLOP count and the fraction of a peak.

    .venv/bin/python benchmarks/retinanet_step.py --variant cpu              # 128x192, width 32, CPU
    .venv/bin/python benchmarks/retinanet_step.py --variant runlocal --steps 5
    python benchmarks/retinanet_step.py --variant full --dtype bfloat16 --peak_tflops 989   # one H100
    python benchmarks/retinanet_step.py --variant full --dtype float32 --peak_tflops 67

One jitted step = forward with batch statistics, targets, focal + box loss, backward, Adam update and
the BatchNorm running-statistics update (`RetinaNetTask.loss`). Times exclude compilation (reported
separately). `--peak_tflops` turns XLA's cost-analysis FLOPs into a fraction of that peak (the
FLOP-based floor on the step time is flops / peak).
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
import retinanet as retinanet_config  # noqa: E402

from cervix_jax.train import task_retinanet  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--variant", default="cpu", choices=("full", "cpu", "runlocal"))
    p.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: the variant's)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--peak_tflops", type=float, default=0.0)
    args = p.parse_args()
    config = retinanet_config.get_config("" if args.variant == "full" else args.variant)
    if args.dtype:
        config.model.dtype = args.dtype
    batch_size = args.batch or config.train.batch_size
    h, w = config.data.pad_to
    task = task_retinanet.make(config.model)
    rng = np.random.default_rng(0)
    masks = np.zeros((batch_size, h, w), bool)
    for i in range(batch_size):
        y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
        masks[i, y:y + h // 3, x:x + w // 3] = True
    batch = {"image": jnp.asarray(rng.normal(size=(batch_size, h, w, 3)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 2, batch_size), jnp.int32),
             "weight": jnp.ones(batch_size, jnp.float32), "cervix_mask": jnp.asarray(masks)}
    params = task.init(jax.random.PRNGKey(0), (h, w, 3))["params"]
    tx = optax.adam(config.train.lr)
    opt = tx.init(params)

    def step(params, opt, batch):
        (loss, aux), grads = jax.value_and_grad(
            lambda q: task.loss(q, {}, batch, None, None, net=task.net), has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        params = {**optax.apply_updates(params, updates), **aux["set_params"]}
        return params, opt, loss

    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt, batch).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    params, opt, loss = compiled(params, opt, batch)        # warm-up
    jax.block_until_ready(loss)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        params, opt, loss = compiled(params, opt, batch)
    jax.block_until_ready(loss)
    dt = (time.perf_counter() - t0) / args.steps
    line = (f"retinanet_step variant={args.variant} dtype={config.model.dtype} batch={batch_size} {h}x{w} "
            f"device={jax.devices()[0].platform}: {batch_size / dt:.2f} img/s ({dt * 1e3:.1f} ms/step), "
            f"compile {compile_s:.1f} s, XLA {flops / 1e9:.1f} GFLOP/step = {flops / dt / 1e12:.3f} TFLOP/s, "
            f"loss {float(loss):.4f}")
    if args.peak_tflops > 0 and flops:
        line += f", {flops / dt / 1e12 / args.peak_tflops:.1%} of {args.peak_tflops:g} TFLOP/s"
    print(line)


if __name__ == "__main__":
    main()
