"""A tiny CNN task, for engine tests and smoke runs (usually on in-memory `memory/<n>` data,
`cervix_jax/data/memory.py`).

`config.model.name = "tiny"`: conv-relu x2, global average pool, dense, softmax over 2 classes.
With `config.model.example_state = True` it keeps a per-example running mean of its predicted
probability (the engine's gather/scatter path, as paper A's regulators) and adds
`0.1 * (p - mean)^2` to the loss, so that the state changes the training.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from cervix_jax.models.parts import ExplainableModel, compute_dtype
from cervix_jax.train.task import Task

DEFAULTS = {"width": 8, "example_state": False}


class TinyCNN(nn.Module):
    width: int = 8
    dtype: Any = jnp.float32        # compute dtype of the convs (config.model.dtype)

    def setup(self):
        self.conv1 = nn.Conv(self.width, (3, 3), dtype=self.dtype)
        self.conv2 = nn.Conv(self.width, (3, 3), dtype=self.dtype)
        self.dense = nn.Dense(2)

    def features(self, x):
        return nn.relu(self.conv2(nn.relu(self.conv1(x)))).astype(jnp.float32)

    def head(self, f):
        return nn.softmax(self.dense(f.mean((-3, -2))))

    def __call__(self, x):
        return self.head(self.features(x))


@dataclasses.dataclass(frozen=True)
class TinyTask(Task):
    width: int
    example_state: bool
    name: str = "tiny"
    dtype: str = "float32"

    @property
    def module(self) -> TinyCNN:
        return TinyCNN(self.width, compute_dtype(self.dtype))

    def init(self, rng, image_shape):
        x = jnp.zeros((1, *image_shape), jnp.float32)
        return {"params": self.module.init(rng, x)["params"], "frozen": {}}

    def init_example_state(self, num_examples: int, image_shape=None):
        if not self.example_state:
            return None
        return {"mean": jnp.full((num_examples,), 0.5, jnp.float32),
                "count": jnp.zeros((num_examples,), jnp.int32)}

    def loss(self, params, frozen, batch, example_state, rng):
        del frozen, rng
        chex.assert_rank(batch["image"], 4)
        probs = self.module.apply({"params": params}, batch["image"])
        label, w = batch["label"], batch["weight"]
        nll = -jnp.log(jnp.take_along_axis(probs, label[:, None], 1)[:, 0] + 1e-7)
        p = probs[:, 1]
        per_example = nll
        new_rows = None
        if self.example_state:
            mean, count = example_state["mean"], example_state["count"]
            per_example = nll + 0.1 * (p - mean) ** 2
            p_sg = jax.lax.stop_gradient(p)
            new_rows = {"mean": mean + (p_sg - mean) / (count + 1), "count": count + 1}
        denom = jnp.maximum(w.sum(), 1.0)
        loss = (w * per_example).sum() / denom
        acc = (w * ((p > 0.5).astype(jnp.int32) == label)).sum() / denom
        return loss, {"metrics": {"accuracy": acc}, "example_state": new_rows}

    def predict(self, params, frozen, batch):
        return self.module.apply({"params": params}, batch["image"])[:, 1]

    def explainable(self, variables) -> ExplainableModel:
        m, v = self.module, {"params": variables["params"]}
        feats = lambda x: m.apply(v, x, method=TinyCNN.features)
        head = lambda f: m.apply(v, f, method=TinyCNN.head)
        post = lambda p: nn.softmax(m.apply(v, p, method=lambda mod, q: mod.dense(q)))
        return ExplainableModel(features=feats, head=head, scores=lambda x: head(feats(x)),
                                post_pool=post, kernel=variables["params"]["dense"]["kernel"])


def make(model_config) -> TinyTask:
    """Task factory registered as "tiny"; takes config.model."""
    return TinyTask(width=model_config.width, example_state=model_config.example_state,
                    dtype=model_config.get("dtype", "float32"))
