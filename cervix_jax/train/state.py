"""The training state: everything that decides the future of a run, as one pytree.

`frozen` variables are not part of it: a task rebuilds them deterministically in `task.init`
(paper B's backbone), so checkpoints stay small.
"""
from __future__ import annotations

from typing import Any, Optional

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """step: int32 [] (optimizer steps done; also the data position), rng: uint32 [2] (base key;
    step k uses fold_in(rng, k)), params, opt_state, example_state (leading dim = dataset size, or
    None)."""

    step: jax.Array
    rng: jax.Array
    params: PyTree
    opt_state: PyTree
    example_state: Optional[PyTree]


def make_optimizer(train_config) -> optax.GradientTransformation:
    """`config.train.optimizer` ("adam" | "sgd" | "adamw") at constant `config.train.lr`."""
    name, lr = train_config.optimizer, train_config.lr
    makers = {"adam": optax.adam, "sgd": optax.sgd, "adamw": optax.adamw}
    if name not in makers:
        raise ValueError(f"config.train.optimizer: expected one of {sorted(makers)}, found {name!r}")
    return makers[name](lr)


def create_state(task, optimizer: optax.GradientTransformation, *, seed: int,
                 image_shape: tuple[int, int, int], num_examples: int) -> tuple[TrainState, PyTree]:
    """Initialises (state, frozen) from `seed`: init key = fold_in(key(seed), 0), step key base =
    fold_in(key(seed), 1)."""
    key = jax.random.PRNGKey(seed)
    variables = task.init(jax.random.fold_in(key, 0), tuple(image_shape))
    if set(variables) != {"params", "frozen"}:
        raise ValueError(f"task {task.name!r}.init: expected keys {{'params', 'frozen'}}, "
                         f"found {sorted(variables)}")
    params = variables["params"]
    state = TrainState(step=jnp.zeros((), jnp.int32), rng=jax.random.fold_in(key, 1),
                       params=params, opt_state=optimizer.init(params),
                       example_state=task.init_example_state(num_examples, tuple(image_shape)))
    return state, variables["frozen"]
