"""The cached-feature head trainer (paper B's sweeps): every (model.levels, seed, data.blur) point of a
sweep from one backbone pass, all heads trained together. Chosen by `config.sweep.trainer =
"cached_heads"` (configs/pyramid.py); `train_points` leaves the points it cannot reproduce exactly to the
ordinary loop.

It reproduces what the ordinary per-point runs do: the same head init, the engine loader's batch order
per seed (`pipeline.Loader.plan`), the epoch with the best `train.best_metric` on validation and
`train.patience` (`checkpoint.BestTracker`), the threshold chosen on clean validation, test scored once
per blur. Every file goes through `rundir`, as the loop's and `evaluate`'s do; no Orbax checkpoint and no
figures, but `head.npz` (the kept head).
"""
from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cervix_jax.models import pyramid
from cervix_jax.train import feature_cache, rundir
from cervix_jax.train.checkpoint import BestTracker
from cervix_jax.train.data import local_data
from cervix_jax.train.scoring import eval_result, val_metrics
from cervix_jax.train.state import make_optimizer
from cervix_jax.train.task import make_task

FAST_KEYS = ("model.levels", "seed", "data.blur")


def unsupported(config, points) -> str:
    """Why this trainer cannot reproduce the ordinary runs of `points` ("" when it can)."""
    if config.model.name != "pyramid":
        return f"model.name={config.model.name!r} (the feature cache is for paper B's frozen-backbone heads)"
    keys = sorted({k for p in points for k in p} - set(FAST_KEYS))
    if keys:
        return f"grid keys {keys} are not among {FAST_KEYS}"
    if config.model.upsample != "nearest_legacy":
        return (f"model.upsample={config.model.upsample!r} "
                "(the feature cache is exact for 'nearest_legacy' only)")
    if jax.process_count() > 1:
        return "multi-process run"
    return ""


class _Sized:
    """An iterable with a length (for progress bars over a loader's epoch)."""

    def __init__(self, iterable, n: int):
        self.iterable, self.n = iterable, n

    def __iter__(self):
        return iter(self.iterable)

    def __len__(self) -> int:
        return self.n


def _scores(cache: dict, levels, kernel, bias) -> np.ndarray:
    """P(class 1) [..., N] of heads (kernel [..., K, 2], bias [..., 2]) on cached features, as `predict`."""
    x = feature_cache.pooled_features({k: jnp.asarray(v) for k, v in cache["pooled"].items()}, levels)
    logits = jnp.einsum("nk,...kc->...nc", x, jnp.asarray(kernel)) + jnp.asarray(bias)[..., None, :]
    return np.asarray(jax.nn.softmax(logits)[..., 1])


def select_epoch(val_rows: list[dict], train_config, steps_per_epoch: int) -> tuple[int, int, float]:
    """(best epoch, last epoch trained, best value) as the loop decides them with `BestTracker`."""
    tracker = BestTracker(train_config.best_metric, train_config.patience)
    last = len(val_rows) - 1
    for epoch, row in enumerate(val_rows):
        _, stop = tracker.update((epoch + 1) * steps_per_epoch, tracker.value_of(row))
        if stop:
            last = epoch
            break
    return tracker.meta["best_step"] // steps_per_epoch - 1, last, tracker.meta["best_value"]


def train_points(config, points: list, workdir) -> list:
    """Runs `points` ((model.levels, seed, data.blur) grid points) together; returns the points left to
    the ordinary loop (all of them, with the reason printed, when `unsupported` says so).

    One backbone pass over train, val and (once per blur level) test; every (levels, seed) head trained
    in one vmapped program (`feature_cache.train_heads`) on the batches an ordinary run of that seed
    sees; per head the epoch-end snapshot the loop would keep as best, its threshold chosen on clean
    val, test scored once per blur level. Writes per point what `launch.py train` + `eval` would:
    config.json, train_summary.json, metrics.jsonl, eval/metrics.json, eval/scores_{val,test}.csv,
    plus head.npz.
    """
    from cervix_jax.train.sweep import point_config, point_name

    reason = unsupported(config, points)
    if reason:
        print(f"sweep: cached-feature trainer off ({reason}); one ordinary run per point", flush=True)
        return list(points)
    t_start = time.time()
    workdir = Path(workdir)
    task = make_task(config)
    point_configs = [point_config(config, p) for p in points]
    seeds = sorted({int(pc.seed) for pc in point_configs})
    blurs = sorted({int(pc.data.blur) for pc in point_configs})
    subsets = list(dict.fromkeys(pyramid.parse_levels(pc.model.levels) for pc in point_configs))
    print(f"sweep (cached features): {len(points)} points = {len(subsets)} heads x {len(seeds)} seeds x "
          f"blur {blurs}, from one backbone pass", flush=True)

    data = {k: local_data(point_config(config, {"data.blur": k})) for k in blurs}
    clean = data[blurs[0]]                     # train and val do not depend on data.blur
    frozen = task.init(jax.random.PRNGKey(seeds[0]), clean.image_shape)["frozen"]
    pool_fn = feature_cache.make_pool_fn(task, config.model.upsample)

    def features(loader, desc):
        return feature_cache.extract(task, frozen, _Sized(loader.epoch(0), len(loader)), pool_fn=pool_fn,
                                     desc=desc)

    train_loader = clean.train.replace(shuffle=False, drop_remainder=False)   # every example once
    train_cache = features(train_loader, "features train")
    if len(train_cache["id"]) != len(train_loader.indices):
        raise RuntimeError(f"cached_heads: {len(train_cache['id'])} train features for "
                           f"{len(train_loader.indices)} train examples")
    val_cache = features(clean.eval["val"], "features val")
    test_caches = {k: features(data[k].eval["test"], f"features test blur {k}") for k in blurs}
    for name, cache in [("val", val_cache)] + [(f"test blur {k}", c) for k, c in test_caches.items()]:
        if len(np.unique(cache["id"])) != len(cache["id"]):
            raise RuntimeError(f"cached_heads: some {name} example was scored twice")
    t_features = time.time()
    print(f"sweep (cached features): features of {len(train_cache['id'])} train, {len(val_cache['id'])} val, "
          f"{len(test_caches[blurs[0]]['id'])} test images x {len(blurs)} blur levels in "
          f"{t_features - t_start:.1f} s (with data loading, backbone init and compilation)", flush=True)
    test_ids = test_caches[blurs[0]]["id"]
    for k, c in test_caches.items():
        if not np.array_equal(c["id"], test_ids):
            raise RuntimeError(f"cached_heads: test examples with blur {k} differ from blur {blurs[0]}")

    # Batch orders: rows of train_cache that step t of an ordinary run of each seed trains on.
    train_config = config.train
    steps_per_epoch = len(clean.train)
    if steps_per_epoch == 0:
        raise ValueError(f"config.train.batch_size={train_config.batch_size} is larger than the "
                         f"training split")
    row_of = np.full(int(np.max(train_loader.indices)) + 1, -1, np.int64)
    row_of[np.asarray(train_loader.indices)] = np.arange(len(train_loader.indices))
    orders = {}
    for s in seeds:
        loader = clean.train.replace(seed=s)
        orders[s] = row_of[np.concatenate([loader.plan(e)[0] for e in range(train_config.epochs)])]
        first = np.asarray(next(iter(loader.epoch(0)))["id"]).reshape(-1)   # the plan is what it yields
        if not np.array_equal(first, train_cache["id"][orders[s][0]]):
            raise RuntimeError("cached_heads: the reconstructed batch order differs from the training "
                               "loader's; run with --config.sweep.trainer=loop")

    heads = feature_cache.train_heads(
        train_cache, subsets, seeds, steps=train_config.epochs * steps_per_epoch,
        optimizer=make_optimizer(train_config),
        init_rng=lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 0),   # as state.create_state
        orders=orders, snapshot_every=steps_per_epoch, progress=True)

    print(f"sweep (cached features): {len(heads)} heads x {train_config.epochs * steps_per_epoch} steps "
          f"trained together in {time.time() - t_features:.1f} s", flush=True)
    chosen = {}
    for (levels, seed), head in heads.items():
        snap = head["snapshots"]
        val_epochs = _scores(val_cache, levels, snap["kernel"], snap["bias"])     # [epochs, n_val]
        rows = [val_metrics({"score": v, "label": val_cache["label"]}) for v in val_epochs]
        best, last, best_value = select_epoch(rows, train_config, steps_per_epoch)
        val_scored = {"id": val_cache["id"], "label": val_cache["label"], "score": val_epochs[best]}
        chosen[(levels, seed)] = dict(best=best, last=last, best_value=best_value, rows=rows,
                                      loss=np.asarray(head["loss"]), kernel=snap["kernel"][best],
                                      bias=snap["bias"][best], val=val_scored)

    seconds = round(time.time() - t_start, 2)
    for p, pc in zip(points, point_configs):
        levels, seed, blur = pyramid.parse_levels(pc.model.levels), int(pc.seed), int(pc.data.blur)
        head = chosen[(levels, seed)]
        tcache = test_caches[blur]
        test_scored = {"id": tcache["id"], "label": tcache["label"],
                       "score": _scores(tcache, levels, head["kernel"], head["bias"])}
        pdir = workdir / "points" / point_name(p)
        pdir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(pdir, pc)
        best_step = (head["best"] + 1) * steps_per_epoch
        last_step = (head["last"] + 1) * steps_per_epoch
        log = rundir.MetricsLog(pdir)
        for e in range(head["last"] + 1):
            epoch_loss = head["loss"][e * steps_per_epoch:(e + 1) * steps_per_epoch]
            log.append({"step": (e + 1) * steps_per_epoch, "epoch": e, "split": "train",
                        "loss": float(epoch_loss.mean())})
            log.append({"step": (e + 1) * steps_per_epoch, "epoch": e, "split": "val", **head["rows"][e]})
        log.close()
        stopped = head["last"] + 1 < train_config.epochs
        rundir.write_train_summary(pdir, {
            "status": "stopped_early" if stopped else "finished", "step": last_step,
            "epoch": head["last"] + 1, "total_steps": train_config.epochs * steps_per_epoch,
            "best_metric": train_config.best_metric, "best_value": head["best_value"], "best_step": best_step,
            "final_loss": float(head["loss"][last_step - 1]), "seconds": seconds, "fast_path": True})
        rundir.write_head(pdir, kernel=head["kernel"], bias=head["bias"], step=best_step, levels=levels)
        scored = {"val": head["val"], "test": test_scored}
        rundir.write_eval(pdir, eval_result(scored, step=best_step, blur=blur, fast_path=True), scored)
    print(f"sweep (cached features): {len(points)} points in {time.time() - t_start:.1f} s", flush=True)
    return []
