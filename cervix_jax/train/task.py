"""The one protocol between the training engine and a model family.

The engine (steps, parallel wrappers, loop, checkpoints, eval, sweeps) never knows which model it
trains; a `Task` tells it. Tasks are registered by name (`config.model.name`) and created with
`make_task(config)`. Implementations: `task_pyramid.py` (paper B), `task_patch.py` (paper A),
`task_tiny.py` (a tiny CNN for engine tests and smoke runs).

Conventions
- `variables = {"params": trainable pytree, "frozen": non-trainable pytree (may be {})}`.
  Only `params` gets gradients and optimiser state (paper B's frozen backbone lives in `frozen`).
- `batch` is a per-device dict (no device axis): image float32 [b,H,W,3], label int32 [b],
  id int32 [b], weight float32 [b] (0 = padding), plus whatever the pipeline added.
- Per-example state (paper A's regulators): a pytree whose leaves have leading dim N = number of
  examples in the dataset (indexed by `id`). The engine gathers the batch's rows, hands them to
  `loss`, and scatters back the rows `loss` returns (only where weight > 0). It is checkpointed.
- `loss` returns the *weighted mean* over the batch (sum(w * l) / max(sum(w), 1)) so that the engine
  can average it across devices with `pmean` when every device holds equally many examples.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Optional, Protocol

import jax

PyTree = Any

# name -> "module:factory" ; factory(config) -> Task. Lazy so that importing the engine does not
# import every model.
_REGISTRY: dict[str, str] = {
    "tiny": "cervix_jax.train.task_tiny:make",
    "pyramid": "cervix_jax.train.task_pyramid:make",
    "patch": "cervix_jax.train.task_patch:make",
    "retinanet": "cervix_jax.train.task_retinanet:make",
}


class Task(Protocol):
    name: str

    def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> dict:
        """Returns {"params": ..., "frozen": ...} for images of shape [H, W, 3]."""

    def init_example_state(self, num_examples: int) -> Optional[PyTree]:
        """Per-example state with leading dim num_examples, or None."""

    def loss(self, params: PyTree, frozen: PyTree, batch: dict, example_state: Optional[PyTree],
             rng: jax.Array) -> tuple[jax.Array, dict]:
        """Returns (weighted-mean loss, aux); aux = {"metrics": {name: weighted-mean scalar},
        "example_state": new rows for the batch (same structure as given) or None}."""

    def predict(self, params: PyTree, frozen: PyTree, batch: dict) -> jax.Array:
        """Probability of class 1, float32 [b]."""

    def explainable(self, variables: dict):
        """An `cervix_jax.models.parts.ExplainableModel` for these variables."""


def register(name: str, target: str) -> None:
    """Registers a task factory "module:function" under `name` (for user extensions)."""
    _REGISTRY[name] = target


def make_task(config) -> Task:
    """Builds the task named by `config.model.name`."""
    name = config.model.name
    if name not in _REGISTRY:
        raise ValueError(f"config.model.name: unknown task {name!r}; expected one of {sorted(_REGISTRY)}")
    module, fn = _REGISTRY[name].split(":")
    factory: Callable = getattr(importlib.import_module(module), fn)
    return factory(config)
