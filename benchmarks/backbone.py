"""Backbone + FPN forward throughput (images/s) vs keras.applications.ResNet50 (JAX backend, no top).

    .venv/bin/python benchmarks/backbone.py                  # 600x400 and 1200x800, f32 and bf16
    .venv/bin/python benchmarks/backbone.py --sizes 600x400 --batch 1 --reps 2

Ours runs ResNet50 + FPN (more work than Keras' ResNet50 alone); ratio = ours / keras (target >= 1).
"""
import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np


def throughput(fn, x, reps):
    jax.block_until_ready(fn(x))                    # compile + warm up
    t = time.perf_counter()
    for _ in range(reps):
        jax.block_until_ready(fn(x))
    return reps * x.shape[0] / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="600x400,1200x800")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    import keras
    from cervix_jax.models import fpn, resnet
    print(f"device: {jax.devices()[0].device_kind}, batch {args.batch}, reps {args.reps}")
    print("| size | dtype | ours ResNet50-FPN img/s | ours ResNet50 img/s | keras ResNet50 img/s "
          "| ratio ResNet50 (ours/keras) | ratio ResNet50-FPN/keras ResNet50 |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        w, h = map(int, size.split("x"))
        x = np.random.default_rng(0).uniform(0, 1, (args.batch, h, w, 3)).astype(np.float32)
        for dtype in ("float32", "bfloat16"):
            module = fpn.ResNet50FPN(dtype=jnp.dtype(dtype))
            variables = jax.jit(module.init)(jax.random.PRNGKey(0), x[:1])
            ours = jax.jit(lambda im: module.apply(variables, im)["P3"])
            ours_ips = throughput(ours, jnp.asarray(x), args.reps)
            rmodule = resnet.ResNet50(dtype=jnp.dtype(dtype))
            rvariables = jax.jit(rmodule.init)(jax.random.PRNGKey(0), x[:1])
            res_ips = throughput(jax.jit(lambda im: rmodule.apply(rvariables, im)["C5"]), jnp.asarray(x),
                                 args.reps)
            keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
            kmodel = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(h, w, 3))
            kfn = jax.jit(lambda im: kmodel(im, training=False))
            keras_ips = throughput(kfn, jnp.asarray(x), args.reps)
            print(f"| {w}x{h} | {dtype} | {ours_ips:.2f} | {res_ips:.2f} | {keras_ips:.2f} | "
                  f"{res_ips / keras_ips:.2f} | {ours_ips / keras_ips:.2f} |", flush=True)


if __name__ == "__main__":
    main()
