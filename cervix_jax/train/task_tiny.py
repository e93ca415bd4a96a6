"""A tiny CNN task and an in-memory dataset, for engine tests and smoke runs.

`config.model.name = "tiny"`: conv-relu x2, global average pool, dense, softmax over 2 classes.
With `config.model.example_state = True` it keeps a per-example running mean of its predicted
probability (the engine's gather/scatter path, as paper A's regulators) and adds
`0.1 * (p - mean)^2` to the loss, so that the state changes the training.

`config.data.name = "memory/<n>"` gives n procedural images (noise; class 1 has a bright square),
built in memory, never written to disk. Groups are pairs of ids.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cervix_jax.models.parts import ExplainableModel, compute_dtype


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
class TinyTask:
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

    def init_example_state(self, num_examples: int):
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


def make(config) -> TinyTask:
    return TinyTask(width=config.model.width, example_state=config.model.example_state,
                    dtype=config.model.get("dtype", "float32"))


# ---------------------------------------------------------------------------------------------
# In-memory data ("memory/<n>")

def memory_examples(num_examples: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """n examples as arrays: image uint8 [n,H,W,3], label, group, id int64 [n], lesion_mask."""
    rng = np.random.default_rng(20240601)
    h, w = shape
    image = rng.integers(0, 120, (num_examples, h, w, 3)).astype(np.uint8)
    label = (rng.random(num_examples) < 0.4).astype(np.int64)
    mask = np.zeros((num_examples, h, w), np.uint8)
    s = max(h // 4, 2)
    for i in np.flatnonzero(label):
        y, x = rng.integers(0, h - s), rng.integers(0, w - s)
        image[i, y:y + s, x:x + s] = 230
        mask[i, y:y + s, x:x + s] = 1
    ids = np.arange(num_examples, dtype=np.int64)
    return {"image": image, "label": label, "group": ids // 2, "id": ids, "lesion_mask": mask}


def memory_split(groups: np.ndarray, test_fraction: float, val_fraction: float, seed: int) -> dict:
    """Split by group (seeded by config.data.split_seed): indices of train, val, test."""
    uniq = np.random.default_rng(seed).permutation(np.unique(groups))
    n_test = int(round(len(uniq) * test_fraction))
    n_val = int(round((len(uniq) - n_test) * val_fraction))
    parts = {"test": uniq[:n_test], "val": uniq[n_test:n_test + n_val], "train": uniq[n_test + n_val:]}
    return {k: np.flatnonzero(np.isin(groups, g)) for k, g in parts.items()}


class ArrayLoader:
    """Batches of in-memory arrays with the pipeline Loader's contract: `len(loader)` steps per
    epoch; `epoch(e, start_step)` yields dicts of [D, b, ...] arrays (image float32 in 0..1, label,
    id int32, weight float32). Shuffled by (seed, epoch); each process takes its slice of every
    global batch; without drop_remainder the last batch is padded with weight-0 copies."""

    def __init__(self, arrays: dict, indices: np.ndarray, *, global_batch_size: int, shuffle: bool,
                 seed: int, drop_remainder: bool, num_devices: int, process_index: int = 0,
                 process_count: int = 1):
        per = num_devices * process_count
        if global_batch_size % per:
            raise ValueError(f"config.train.batch_size={global_batch_size} must be divisible by "
                             f"devices x processes = {per}")
        self.arrays, self.indices = arrays, np.asarray(indices)
        self.batch, self.shuffle, self.seed, self.drop = global_batch_size, shuffle, seed, drop_remainder
        self.d, self.pi, self.pc = num_devices, process_index, process_count

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch if self.drop else -(-n // self.batch)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict]:
        order = self.indices
        if self.shuffle:
            order = order[np.random.default_rng([self.seed, epoch]).permutation(len(order))]
        local = self.batch // self.pc
        for step in range(start_step, len(self)):
            idx = order[step * self.batch:(step + 1) * self.batch]
            weight = np.ones(self.batch, np.float32)
            if len(idx) < self.batch:
                weight[len(idx):] = 0
                idx = np.concatenate([idx, np.full(self.batch - len(idx), idx[0])])
            sl = slice(self.pi * local, (self.pi + 1) * local)
            idx, weight = idx[sl], weight[sl]
            out = {"image": self.arrays["image"][idx].astype(np.float32) / 255.0,
                   "label": self.arrays["label"][idx].astype(np.int32),
                   "id": self.arrays["id"][idx].astype(np.int32), "weight": weight}
            yield {k: v.reshape(self.d, local // self.d, *v.shape[1:]) for k, v in out.items()}
