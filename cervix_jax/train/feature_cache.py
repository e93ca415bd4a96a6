"""Paper B's heads from cached pooled features: one backbone pass, every level subset, many seeds.

Why it is exact. A head is softmax(dense(mean_hw concat_l up(P_l)))). Upsampling is linear and
separable, up(P)[i, j] = sum_{a,b} Ry[i, a] Rx[j, b] P[a, b], so
    mean_{i,j} up(P)[i, j] = sum_{a,b} wy[a] wx[b] P[a, b],   wy[a] = sum_i Ry[i, a] / H  (wx alike).
For the legacy-nearest rule (source floor(i * h / H)) Ry is one-hot: wy[a] = (number of output rows
copied from row a) / H, an integer multiplicity. So the pooled vector of every level at every target
size ("P6@P3": P6 upsampled to P3's size, then averaged) is a weighted mean of the coarse map, and the
pooled concat of a subset is the concat of its levels' pooled vectors at the finest chosen level's size.
Channel means commute with concatenation, so the cache (15 vectors per image) serves all 31 subsets.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from cervix_jax.models import pyramid

LEVELS = pyramid.LEVELS


def cache_key(level: str, target: str) -> str:
    """"P6@P3": level P6 upsampled to P3's size, then globally averaged."""
    return f"{level}@{target}"


def axis_weights(n_in: int, n_out: int, method: str) -> np.ndarray:
    """w [n_in] with mean_i up(x)[i] = sum_a w[a] x[a] for legacy-nearest n_in -> n_out (sums to 1)."""
    if method != "nearest_legacy":
        raise ValueError(f"feature cache: expected upsample 'nearest_legacy' (exact integer "
                         f"multiplicities), found {method!r}; train bilinear heads on full maps")
    src = np.arange(n_out) * n_in // n_out
    return np.bincount(src, minlength=n_in) / n_out


def pool_pyramid(maps: dict, method: str = "nearest_legacy") -> dict:
    """{"P3": [N,h3,w3,C], ...} -> {"Pl@Pt": [N, C] for t <= l}: GAP of P_l upsampled to P_t's size."""
    out = {}
    for ti, target in enumerate(LEVELS):
        th, tw = maps[target].shape[1:3]
        for level in LEVELS[ti:]:
            h, w = maps[level].shape[1:3]
            weights = np.outer(axis_weights(h, th, method), axis_weights(w, tw, method))
            out[cache_key(level, target)] = jnp.einsum("nhwc,hw->nc", maps[level],
                                                       weights.astype(np.float32))
    return out


def pooled_features(pooled: dict, levels: Sequence[str]):
    """Cache -> the pooled concat of `levels` [N, C * len(levels)], what the head's dense layer sees."""
    levels = pyramid.canonical_levels(levels)
    return jnp.concatenate([pooled[cache_key(l, levels[0])] for l in levels], axis=-1)


def extract(task, frozen: dict, batches: Iterable[dict], method: str = "nearest_legacy") -> dict:
    """Runs the frozen backbone once over `batches` (images [..., H, W, 3], label, weight, id; a leading
    device axis is flattened) and keeps the rows with weight > 0.

    Returns NumPy {"pooled": {"Pl@Pt": [N, C]}, "label": [N], "id": [N]}.
    """
    @jax.jit
    def pool(images):
        return pool_pyramid(task.pyramid_maps(frozen, images), method)

    chunks = []
    for batch in tqdm(batches, desc="extract features", leave=False):
        image = np.asarray(batch["image"])
        image = image.reshape(-1, *image.shape[-3:])
        keep = np.asarray(batch["weight"]).reshape(-1) > 0
        pooled = jax.device_get(pool(image))
        chunks.append(({k: v[keep] for k, v in pooled.items()},
                       np.asarray(batch["label"]).reshape(-1)[keep], np.asarray(batch["id"]).reshape(-1)[keep]))
    return {"pooled": {k: np.concatenate([c[0][k] for c in chunks]) for k in chunks[0][0]},
            "label": np.concatenate([c[1] for c in chunks]), "id": np.concatenate([c[2] for c in chunks])}


def train_heads(cache: dict, subsets: Sequence[Sequence[str]], seeds: Sequence[int], *, steps: int,
                lr: float, batch_size: int | None = None, num_classes: int = 2) -> dict:
    """Trains one dense head per (subset, seed) from `cache`, all together in one jitted program.

    Each head starts as `PyramidTask.init(jax.random.PRNGKey(seed))` makes it, and takes `steps` Adam(lr)
    steps on the Task's loss (weighted-mean cross-entropy); batch_size None = the whole cache per step,
    else batches from a fresh permutation each epoch (key fold_in(PRNGKey(seed), epoch)), last partial
    batch dropped. Heads of different widths are padded to a P3..P7 slot layout (zero features, zero
    kernel rows: their gradients and Adam updates are exactly zero) and vmapped.

    Returns {(levels, seed): {"params": {"classifier": {"kernel", "bias"}}, "loss": [steps]}}.
    """
    subsets = [pyramid.canonical_levels(s) for s in subsets]
    c = cache["pooled"][cache_key("P3", "P3")].shape[-1]
    n = len(cache["label"])
    bs = n if batch_size is None else batch_size
    if not 0 < bs <= n:
        raise ValueError(f"batch_size: expected 1..{n} (examples in the cache), found {batch_size}")
    # Design matrices in the slot layout: [S, N, 5C].
    x_all = np.zeros((len(subsets), n, len(LEVELS) * c), np.float32)
    for s, levels in enumerate(subsets):
        for l in levels:
            i = LEVELS.index(l)
            x_all[s, :, i * c:(i + 1) * c] = cache["pooled"][cache_key(l, levels[0])]
    labels = jnp.asarray(cache["label"], jnp.int32)

    heads, kernels, biases, subset_idx, seed_keys = [], [], [], [], []
    for s, levels in enumerate(subsets):
        rows = np.concatenate([np.arange(LEVELS.index(l) * c, (LEVELS.index(l) + 1) * c) for l in levels])
        for seed in seeds:
            _, rng_head = jax.random.split(jax.random.PRNGKey(seed))   # as PyramidTask.init_params
            p = pyramid.init_head(rng_head, c * len(levels), num_classes)["classifier"]
            kernels.append(jnp.zeros((len(LEVELS) * c, num_classes)).at[rows].set(p["kernel"]))
            biases.append(p["bias"])
            heads.append((levels, seed, rows))
            subset_idx.append(s)
            seed_keys.append(jax.random.PRNGKey(seed))
    tx = optax.adam(lr)
    x_all = jnp.asarray(x_all)
    steps_per_epoch = n // bs

    def train_one(params, s, key):
        def loss_fn(p, idx):
            logits = x_all[s][idx] @ p["kernel"] + p["bias"]
            return pyramid.cross_entropy(logits, labels[idx], jnp.ones(idx.shape, jnp.float32))

        def step(carry, t):
            p, opt = carry
            perm = jax.random.permutation(jax.random.fold_in(key, t // steps_per_epoch), n)
            idx = jnp.arange(n) if batch_size is None else \
                jax.lax.dynamic_slice(perm, ((t % steps_per_epoch) * bs,), (bs,))
            loss, grads = jax.value_and_grad(loss_fn)(p, idx)
            updates, opt = tx.update(grads, opt, p)
            return (optax.apply_updates(p, updates), opt), loss

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
        return params, losses

    params = {"kernel": jnp.stack(kernels), "bias": jnp.stack(biases)}
    params, losses = jax.jit(jax.vmap(train_one))(params, jnp.asarray(subset_idx), jnp.stack(seed_keys))
    out = {}
    for g, (levels, seed, rows) in enumerate(heads):
        out[(levels, seed)] = {"params": {"classifier": {"kernel": params["kernel"][g][rows],
                                                         "bias": params["bias"][g]}},
                               "loss": losses[g]}
    return out
