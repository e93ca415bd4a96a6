"""Paper A train-step throughput per patch-size variant, and the regulator refit's share of a step.

    .venv/bin/python benchmarks/patch_step.py                      # CPU, batch 2, all variants
    .venv/bin/python benchmarks/patch_step.py --batch 32 --steps 20   # on a GPU

For each variant: images/s of one jitted Adam step with the iterative regulator, the same with the
refit left out ("fixed"; the spatial loss is still computed), their ratio, and the vmapped refit
alone (jitted) as a fraction of the step. Random images; timings exclude compilation.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # configs/ lives at the repo root

from cervix_jax import regulator  # noqa: E402
from cervix_jax.models.patch import PATCH_VARIANTS  # noqa: E402
from cervix_jax.train import task_patch  # noqa: E402
from configs.patch import get_config  # noqa: E402


def timed(fn, steps):
    out = fn()                      # compile + warm up
    jax.block_until_ready(out)
    t = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / steps


def bench(variant, mode, batch_size, steps, n_examples=64):
    c = get_config(f"{variant},{mode}")
    task = task_patch.make(c.model)
    h, w = c.data.pad_to
    rng = np.random.default_rng(0)
    params = task.init(jax.random.PRNGKey(0), (h, w, 3))["params"]
    opt = optax.adam(c.train.lr)
    opt_state = opt.init(params)
    state = task.init_example_state(n_examples, (*c.data.pad_to, 3))
    batch = {"image": jnp.asarray(rng.uniform(0, 1, (batch_size, h, w, 3)), jnp.float32),
             "label": jnp.asarray(rng.integers(0, 2, batch_size), jnp.int32),
             "id": jnp.arange(batch_size, dtype=jnp.int32),
             "weight": jnp.ones(batch_size, jnp.float32)}

    @jax.jit
    def step(params, opt_state, state):
        rows = jax.tree.map(lambda x: x[batch["id"]], state)
        (loss, aux), g = jax.value_and_grad(task.loss, has_aux=True)(params, {}, batch, rows, None)
        upd, opt_state = opt.update(g, opt_state, params)
        state = jax.tree.map(lambda x, r: x.at[batch["id"]].set(r), state, aux["example_state"])
        return optax.apply_updates(params, upd), opt_state, state

    t_step = timed(lambda: step(params, opt_state, state), steps)
    t_refit = None
    if mode == "iterative":
        a = jnp.asarray(rng.uniform(0, 1, (batch_size,) + task.grid_for(c.data.pad_to)), jnp.float32)
        refit = jax.jit(jax.vmap(lambda m, cv, x: regulator.refit(m, cv, x, eps_w=task.eps_w,
                                                                 eig_floor=task.eig_floor)))
        rows = jax.tree.map(lambda x: x[:batch_size], state)
        t_refit = timed(lambda: refit(rows["mu"], rows["cov"], a), max(steps, 20))
    return t_step, t_refit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(PATCH_VARIANTS))
    args = ap.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), batch {args.batch}, "
          f"{args.steps} timed steps")
    print("| variant | grid | image | step iterative (img/s) | step fixed (img/s) | iterative/fixed time "
          "| refit alone (ms) | refit / step |")
    print("|---|---|---|---|---|---|---|---|")
    for v in args.variants:
        p, side, g = PATCH_VARIANTS[v]
        t_it, t_refit = bench(v, "iterative", args.batch, args.steps)
        t_fx, _ = bench(v, "fixed", args.batch, args.steps)
        print(f"| {v} | {g}x{g} | {side} | {args.batch / t_it:.2f} | {args.batch / t_fx:.2f} | "
              f"{t_it / t_fx:.3f} | {1e3 * t_refit:.3f} | {t_refit / t_it:.2e} |", flush=True)


if __name__ == "__main__":
    main()
