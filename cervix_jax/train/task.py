"""The one protocol between the training engine and a model family.

The engine (steps, parallel wrappers, loop, checkpoints, eval, trainers) never knows which model it
trains; a `Task` tells it. A family registers "module:factory" under its name (`config.model.name`);
`make_task(config)` calls `factory(config.model)`: a task sees only its own config keys, whose defaults
the family module exports as `DEFAULTS` (`base_config(model=name)` reads them through `defaults`).
Implementations: `task_pyramid.py` (paper B), `task_patch.py` (paper A), `task_baseline.py` (paper A's
Table 1 whole-image and crop baselines), `task_tiny.py` (a tiny CNN for engine tests and smoke runs).

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
- `aux` may also hold "set_params": {top-level params key: new value}, written by the train step after
  the optimizer update (averaged over devices): non-gradient state such as BatchNorm running statistics
  (the stage-1 RetinaNet, `task_retinanet.py`).
- Optional hooks have a no-op default here: a task class that subclasses `Task` inherits them. A task
  may also define `evaluate_extra(variables, data, out_dir) -> dict`, merged into `eval/metrics.json`.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Optional, Protocol

import jax

PyTree = Any

# name -> "module:factory" ; factory(config.model) -> Task. Lazy so that importing the engine does not
# import every model.
_REGISTRY: dict[str, str] = {
    "tiny": "cervix_jax.train.task_tiny:make",
    "pyramid": "cervix_jax.train.task_pyramid:make",
    "patch": "cervix_jax.train.task_patch:make",
    "retinanet": "cervix_jax.train.task_retinanet:make",
    "baseline": "cervix_jax.train.task_baseline:make",
}


class Task(Protocol):
    name: str

    def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> dict:
        """Returns {"params": ..., "frozen": ...} for images of shape [H, W, 3]."""

    def init_example_state(self, num_examples: int, image_shape: tuple[int, int, int]) -> Optional[PyTree]:
        """Per-example state with leading dim num_examples (images [H, W, 3]), or None."""

    def loss(self, params: PyTree, frozen: PyTree, batch: dict, example_state: Optional[PyTree],
             rng: jax.Array) -> tuple[jax.Array, dict]:
        """Returns (weighted-mean loss, aux); aux = {"metrics": {name: weighted-mean scalar},
        "example_state": new rows for the batch (same structure as given) or None}."""

    def predict(self, params: PyTree, frozen: PyTree, batch: dict) -> jax.Array:
        """Probability of class 1, float32 [b]."""

    def explainable(self, variables: dict):
        """An `cervix_jax.models.parts.ExplainableModel` for these variables."""

    # -- optional hooks (no-op defaults) --------------------------------------------------------
    def on_epoch_end(self, example_state: Optional[PyTree], epoch: int, workdir, data) -> None:
        """Called by the loop on process 0 after the validation of every epoch (`epoch` counts from
        1) with the host copy of the per-example state, e.g. to record paper A's regulators."""

    # Optional: image_features(params, frozen, batch) -> [b, D] image-level feature vectors (the
    # classifier's input), for t-SNE figures (paper A's Fig. 4d; the patch and baseline tasks have it).


def register(name: str, target: str) -> None:
    """Registers a task factory "module:function" under `name` (for user extensions)."""
    _REGISTRY[name] = target


def _module(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"config.model.name: unknown task {name!r}; expected one of {sorted(_REGISTRY)}")
    module, fn = _REGISTRY[name].split(":")
    return importlib.import_module(module), fn


def defaults(name: str) -> dict:
    """The family's config.model keys and defaults (its module's `DEFAULTS`; {} when it has none)."""
    module, _ = _module(name)
    return dict(getattr(module, "DEFAULTS", {}))


def make_task(config) -> Task:
    """Builds the task named by `config.model.name` from `config.model`."""
    module, fn = _module(config.model.name)
    factory: Callable = getattr(module, fn)
    return factory(config.model)
