"""Per-device train and eval steps (collectives over `parallel.AXIS`); wrap with
`parallel.data_parallel`."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from cervix_jax.train.parallel import AXIS
from cervix_jax.train.state import TrainState


def train_step(state: TrainState, frozen, batch: dict, *, task, optimizer: optax.GradientTransformation):
    """One optimizer step on this device's part of the global batch. Gradients and metrics are
    averaged over devices; top-level `params` entries the task returns in `aux["set_params"]` replace
    the optimizer's result (averaged over devices); new per-example rows from all devices are gathered
    so every replica scatters the same update (rows with weight 0 are dropped)."""
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(AXIS))
    ids = batch["id"]
    rows = None
    if state.example_state is not None:
        rows = jax.tree.map(lambda x: x[ids], state.example_state)

    def loss_fn(params):
        return task.loss(params, frozen, batch, rows, rng)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, AXIS)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if aux.get("set_params") is not None:   # non-gradient updates, e.g. BatchNorm running statistics
        params = {**params, **jax.lax.pmean(aux["set_params"], AXIS)}
    example_state = state.example_state
    if example_state is not None:
        n = jax.tree.leaves(example_state)[0].shape[0]
        all_ids = jax.lax.all_gather(jnp.where(batch["weight"] > 0, ids, n), AXIS, tiled=True)
        all_rows = jax.lax.all_gather(aux["example_state"], AXIS, tiled=True)
        example_state = jax.tree.map(lambda x, r: x.at[all_ids].set(r.astype(x.dtype), mode="drop"),
                                     example_state, all_rows)
    metrics = jax.lax.pmean({"loss": loss, **aux["metrics"]}, AXIS)
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                        example_state=example_state)
    return new, metrics


def eval_step(params, frozen, batch: dict, *, task):
    """Scores of this device's examples, gathered over devices: dict id, label, weight, score,
    each [global batch]. (Paper B's blur degradation is applied by the pipeline, see loop.make_data.)"""
    out = {"score": task.predict(params, frozen, batch).astype(jnp.float32),
           "id": batch["id"], "label": batch["label"], "weight": batch["weight"]}
    return jax.lax.all_gather(out, AXIS, tiled=True)
