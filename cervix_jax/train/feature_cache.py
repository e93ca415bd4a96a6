"""Paper B's heads from cached pooled features: one backbone pass, every level subset, many seeds.

Why it is exact. A head is softmax(dense(mean_hw concat_l up(P_l)))). Upsampling is linear and
separable, up(P)[i, j] = sum_{a,b} Ry[i, a] Rx[j, b] P[a, b], so
    mean_{i,j} up(P)[i, j] = sum_{a,b} wy[a] wx[b] P[a, b],   wy[a] = sum_i Ry[i, a] / H  (wx alike).
For the legacy-nearest rule (source floor(i * h / H)) Ry is one-hot: wy[a] = (number of output rows
copied from row a) / H, an integer multiplicity. So the pooled vector of every level at every target
size ("P6@P3": P6 upsampled to P3's size, then averaged) is a weighted mean of the coarse map, and the
pooled concat of a subset is the concat of its levels' pooled vectors at the finest chosen level's size.
Channel means commute with concatenation, so the cache (15 vectors per image) serves all 31 subsets.

Padded images (smaller than pad_to, `valid` marking the image pixels): the head's GAP is over the valid
region, mean_{i,j} v[i, j] up(P)[i, j] / sum v with v = parts.valid_fraction(valid) on the target grid,
and the same argument gives per-image weights (Ry^T v Rx)[a, b] / sum v on P_l's grid: still exact.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from cervix_jax.models import pyramid
from cervix_jax.models.parts import valid_fraction

LEVELS = pyramid.LEVELS


def cache_key(level: str, target: str) -> str:
    """"P6@P3": level P6 upsampled to P3's size, then globally averaged."""
    return f"{level}@{target}"


def _check_method(method: str) -> None:
    if method != "nearest_legacy":
        raise ValueError(f"feature cache: expected upsample 'nearest_legacy' (exact integer "
                         f"multiplicities), found {method!r}; train bilinear heads on full maps")


def axis_weights(n_in: int, n_out: int, method: str) -> np.ndarray:
    """w [n_in] with mean_i up(x)[i] = sum_a w[a] x[a] for legacy-nearest n_in -> n_out (sums to 1)."""
    _check_method(method)
    src = np.arange(n_out) * n_in // n_out
    return np.bincount(src, minlength=n_in) / n_out


def copy_matrix(n_in: int, n_out: int, method: str) -> np.ndarray:
    """R [n_out, n_in], one-hot: output row i of legacy-nearest upsampling copies input row R[i]."""
    _check_method(method)
    return np.eye(n_in, dtype=np.float32)[np.arange(n_out) * n_in // n_out]


def pool_pyramid(maps: dict, method: str = "nearest_legacy", valid=None) -> dict:
    """{"P3": [N,h3,w3,C], ...} -> {"Pl@Pt": [N, C] for t <= l}: GAP of P_l upsampled to P_t's size,
    over the valid region of each image when `valid` [N, H, W] is given (see the module doc)."""
    out = {}
    for ti, target in enumerate(LEVELS):
        th, tw = maps[target].shape[1:3]
        v = None if valid is None else valid_fraction(valid, (th, tw))              # [N, th, tw]
        for level in LEVELS[ti:]:
            h, w = maps[level].shape[1:3]
            if v is None:
                weights = np.outer(axis_weights(h, th, method), axis_weights(w, tw, method))
                out[cache_key(level, target)] = jnp.einsum("nhwc,hw->nc", maps[level],
                                                           weights.astype(np.float32))
                continue
            ry, rx = copy_matrix(h, th, method), copy_matrix(w, tw, method)
            weights = jnp.einsum("ia,nij,jb->nab", ry, v, rx, precision=jax.lax.Precision.HIGHEST)
            weights = weights / jnp.maximum(v.sum((1, 2)), 1e-12)[:, None, None]
            out[cache_key(level, target)] = jnp.einsum("nhwc,nhw->nc", maps[level], weights,
                                                       precision=jax.lax.Precision.HIGHEST)
    return out


def pooled_features(pooled: dict, levels: Sequence[str]):
    """Cache -> the pooled concat of `levels` [N, C * len(levels)], what the head's dense layer sees."""
    levels = pyramid.canonical_levels(levels)
    return jnp.concatenate([pooled[cache_key(lvl, levels[0])] for lvl in levels], axis=-1)


def make_pool_fn(task, method: str = "nearest_legacy"):
    """jit(frozen, images [b, H, W, 3], valid [b, H, W] or None) -> {"Pl@Pt": [b, C]}: compiled once,
    reusable across `extract` calls."""
    return jax.jit(lambda frozen, images, valid=None: pool_pyramid(task.pyramid_maps(frozen, images),
                                                                     method, valid))


def extract(task, frozen: dict, batches: Iterable[dict], method: str = "nearest_legacy", *,
            pool_fn=None, desc: str = "extract features") -> dict:
    """Runs the frozen backbone once over `batches` (images [..., H, W, 3], label, weight, id, optional
    valid [..., H, W] for padded images; a leading device axis is flattened) and keeps the rows with
    weight > 0. `pool_fn` (from `make_pool_fn`)
    avoids a recompilation per call; `desc` labels the progress bar.

    Returns NumPy {"pooled": {"Pl@Pt": [N, C]}, "label": [N], "id": [N]}.
    """
    pool = pool_fn or make_pool_fn(task, method)
    total = len(batches) if hasattr(batches, "__len__") else None
    chunks = []
    for batch in tqdm(batches, desc=desc, total=total, unit="batch", leave=False, disable=None):
        image = np.asarray(batch["image"])
        image = image.reshape(-1, *image.shape[-3:])
        keep = np.asarray(batch["weight"]).reshape(-1) > 0
        valid = batch.get("valid")
        valid = None if valid is None else np.asarray(valid).reshape(-1, *image.shape[1:3])
        pooled = jax.device_get(pool(frozen, image, valid))
        chunks.append(({k: v[keep] for k, v in pooled.items()},
                       np.asarray(batch["label"]).reshape(-1)[keep],
                       np.asarray(batch["id"]).reshape(-1)[keep]))
    return {"pooled": {k: np.concatenate([c[0][k] for c in chunks]) for k in chunks[0][0]},
            "label": np.concatenate([c[1] for c in chunks]), "id": np.concatenate([c[2] for c in chunks])}


def train_heads(cache: dict, subsets: Sequence[Sequence[str]], seeds: Sequence[int], *, steps: int,
                lr: float | None = None, batch_size: int | None = None, num_classes: int = 2,
                optimizer: optax.GradientTransformation | None = None,
                init_rng: Callable[[int], jax.Array] | None = None,
                orders: dict | None = None, snapshot_every: int | None = None,
                progress: bool = False) -> dict:
    """Trains one dense head per (subset, seed) from `cache`, all together in one jitted program.

    Each head starts as `PyramidTask.init_params(init_rng(seed))` makes it (default init_rng(seed) =
    PRNGKey(seed); the engine's `create_state` uses fold_in(PRNGKey(seed), 0)), and takes `steps`
    `optimizer` steps (default Adam(lr)) on the Task's loss (weighted-mean cross-entropy).
    Batches: `orders[seed]` int [steps, b] of cache rows when given (e.g. the engine loader's plan, so
    that a head sees what an ordinary run of that seed sees); else batch_size None = the whole cache per
    step, else batches from a fresh permutation each epoch (key fold_in(PRNGKey(seed), epoch)), last
    partial batch dropped. Heads of different widths are padded to a P3..P7 slot layout (zero features,
    zero kernel rows: their gradients and Adam updates are exactly zero) and vmapped.

    `snapshot_every=k` (dividing steps) also returns the params after steps k, 2k, ..., steps (e.g. every
    epoch end, for val-based checkpoint selection); training then runs as steps/k jitted chunks of k
    steps (one compilation). `progress` shows a tqdm bar over steps.

    Returns {(levels, seed): {"params": {"classifier": {"kernel", "bias"}}, "loss": [steps]}} plus, with
    snapshot_every, "snapshots": {"kernel": [steps/k, K, C], "bias": [steps/k, C]}.
    """
    subsets = [pyramid.canonical_levels(s) for s in subsets]
    c = cache["pooled"][cache_key("P3", "P3")].shape[-1]
    n = len(cache["label"])
    if orders is not None:
        missing = [s for s in seeds if s not in orders]
        if missing:
            raise ValueError(f"train_heads: orders has no batch order for seeds {missing}")
        order_arrays = {s: np.asarray(orders[s], np.int32) for s in seeds}
        shapes = {a.shape for a in order_arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2 or next(iter(shapes))[0] != steps:
            raise ValueError(f"train_heads: expected orders[seed] of shape [steps={steps}, batch], "
                             f"found shapes {sorted(shapes)}")
        if any(a.min() < 0 or a.max() >= n for a in order_arrays.values()):
            raise ValueError(f"train_heads: orders index rows outside the cache (0..{n - 1})")
        bs = next(iter(shapes))[1]
    else:
        bs = n if batch_size is None else batch_size
        if not 0 < bs <= n:
            raise ValueError(f"batch_size: expected 1..{n} (examples in the cache), found {batch_size}")
    every = steps if snapshot_every is None else int(snapshot_every)
    if every <= 0 or steps % every:
        raise ValueError(f"train_heads: snapshot_every={snapshot_every} must divide steps={steps}")
    if optimizer is None:
        if lr is None:
            raise ValueError("train_heads: give lr (Adam) or optimizer")
        optimizer = optax.adam(lr)
    init_rng = init_rng or jax.random.PRNGKey
    # Design matrices in the slot layout: [S, N, 5C].
    x_all = np.zeros((len(subsets), n, len(LEVELS) * c), np.float32)
    for s, levels in enumerate(subsets):
        for lvl in levels:
            i = LEVELS.index(lvl)
            x_all[s, :, i * c:(i + 1) * c] = cache["pooled"][cache_key(lvl, levels[0])]
    labels = jnp.asarray(cache["label"], jnp.int32)

    heads, kernels, biases, subset_idx, seed_keys, head_orders = [], [], [], [], [], []
    for s, levels in enumerate(subsets):
        rows = np.concatenate([np.arange(LEVELS.index(lvl) * c, (LEVELS.index(lvl) + 1) * c)
                               for lvl in levels])
        for seed in seeds:
            _, rng_head = jax.random.split(init_rng(seed))   # as PyramidTask.init_params
            p = pyramid.init_head(rng_head, c * len(levels), num_classes)["classifier"]
            kernels.append(jnp.zeros((len(LEVELS) * c, num_classes)).at[rows].set(p["kernel"]))
            biases.append(p["bias"])
            heads.append((levels, seed, rows))
            subset_idx.append(s)
            seed_keys.append(jax.random.PRNGKey(seed))
            if orders is not None:
                head_orders.append(order_arrays[seed])
    tx = optimizer
    x_all = jnp.asarray(x_all)
    steps_per_epoch = n // bs
    # [G, steps, b] explicit orders, or a dummy [G, 1, 1] (unused).
    order_all = jnp.asarray(np.stack(head_orders) if orders is not None
                            else np.zeros((len(heads), 1, 1), np.int32))

    def chunk_one(params, opt, s, key, order, t0):
        def loss_fn(p, idx):
            logits = x_all[s][idx] @ p["kernel"] + p["bias"]
            return pyramid.cross_entropy(logits, labels[idx], jnp.ones(idx.shape, jnp.float32))

        def step(carry, t):
            p, o = carry
            if orders is not None:
                idx = order[t]
            elif batch_size is None:
                idx = jnp.arange(n)
            else:
                perm = jax.random.permutation(jax.random.fold_in(key, t // steps_per_epoch), n)
                idx = jax.lax.dynamic_slice(perm, ((t % steps_per_epoch) * bs,), (bs,))
            loss, grads = jax.value_and_grad(loss_fn)(p, idx)
            updates, o = tx.update(grads, o, p)
            return (optax.apply_updates(p, updates), o), loss

        (params, opt), losses = jax.lax.scan(step, (params, opt), t0 + jnp.arange(every))
        return params, opt, losses

    run_chunk = jax.jit(jax.vmap(chunk_one, in_axes=(0, 0, 0, 0, 0, None)))
    params = {"kernel": jnp.stack(kernels), "bias": jnp.stack(biases)}
    opt = jax.vmap(tx.init)(params)
    subset_idx, seed_keys = jnp.asarray(subset_idx), jnp.stack(seed_keys)
    losses, snaps = [], []
    bar = tqdm(total=steps, desc=f"train {len(heads)} heads", unit="step", leave=False,
               disable=None if progress else True)   # None: a bar on a terminal only
    for t0 in range(0, steps, every):
        params, opt, chunk_losses = run_chunk(params, opt, subset_idx, seed_keys, order_all, t0)
        losses.append(chunk_losses)
        if snapshot_every is not None:
            snaps.append(jax.device_get(params))
        bar.update(every)
    bar.close()
    losses = jnp.concatenate(losses, axis=1)
    out = {}
    for g, (levels, seed, rows) in enumerate(heads):
        out[(levels, seed)] = {"params": {"classifier": {"kernel": params["kernel"][g][rows],
                                                         "bias": params["bias"][g]}},
                               "loss": losses[g]}
        if snapshot_every is not None:
            out[(levels, seed)]["snapshots"] = {
                "kernel": np.stack([sn["kernel"][g][rows] for sn in snaps]),
                "bias": np.stack([sn["bias"][g] for sn in snaps])}
    return out
