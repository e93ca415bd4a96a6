"""Paper B's Task: a frozen ResNet50-FPN (in `frozen`) and a trainable GAP + dense(2) head (in `params`).

config.model keys read here (see configs/pyramid.py):
  levels               level subset, "p3,p6,p7" or a paper head name ("p3p6p7"), see pyramid.parse_levels
  upsample             "nearest_legacy" | "bilinear"
  backbone             "resnet50" | "tiny" (test-only)
  style, stem, bn_eps, conv_bias, p6_from   see models/resnet.py and models/fpn.py
  backbone_checkpoint  "" (random backbone), a folder written by `python -m cervix_jax.convert.cli`, or
                       the workdir of a stage-1 run (configs/retinanet.py): its best checkpoint's
                       backbone + FPN, whose architecture then comes from that run's config

Without a checkpoint the backbone is random from the fixed key PRNGKey(RANDOM_BACKBONE_SEED), the same
for every config.seed, as a pretrained one would be: seeds vary the head's init and the data order only.

Sweeps (`launch.py sweep`): `PyramidTask.sweep_fast` runs every (model.levels, seed, data.blur) point
of `config.sweep.grid` from one backbone pass (train, val, and test once per blur level) with all heads
trained together (`feature_cache.train_heads`), reproducing what the ordinary per-point runs do: the
same head init, the engine loader's batch order per seed, the epoch with the best
`train.best_metric` on validation (and `train.patience`), the threshold chosen on clean validation,
test scored once per blur. `PyramidTask.sweep_report` writes the paper's table (`paper_table.md/.csv`).
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from cervix_jax.models import fpn, pyramid
from cervix_jax.train import feature_cache

BACKBONES = {"resnet50": fpn.ResNet50FPN, "tiny": fpn._ResNetTinyFPN}
ARCH_KEYS = ("backbone", "style", "stem", "bn_eps", "conv_bias", "p6_from")
_INIT_HW = (64, 64)   # parameter shapes do not depend on the image size
RANDOM_BACKBONE_SEED = 0   # the random backbone (no checkpoint) is the same for every config.seed


def backbone_from_config(model_config) -> fpn.ResNetFPN:
    """The ResNetFPN that config.model describes."""
    if model_config.backbone not in BACKBONES:
        raise ValueError(f"config.model.backbone: expected one of {sorted(BACKBONES)}, "
                         f"found {model_config.backbone!r}")
    return BACKBONES[model_config.backbone](
        style=model_config.style, stem=model_config.stem, bn_eps=float(model_config.bn_eps),
        conv_bias=bool(model_config.conv_bias), p6_from=model_config.p6_from)


def load_backbone_checkpoint(path: str, abstract_frozen, model_config) -> dict:
    """Restores {"frozen": ...} from a converter folder; checks its architecture against config.model."""
    import orbax.checkpoint as ocp
    path = os.path.abspath(os.path.expanduser(path))
    meta_path = os.path.join(path, "backbone.json")
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"config.model.backbone_checkpoint: expected {meta_path} (written by "
                                f"`python -m cervix_jax.convert.cli`), found no such file")
    with open(meta_path) as f:
        meta = json.load(f)
    wrong = {k: (meta[k], model_config[k]) for k in ARCH_KEYS if meta[k] != model_config[k]}
    if wrong:
        flags = " ".join(f"--config.model.{k}={v[0]}" for k, v in wrong.items())
        raise ValueError(f"config.model.backbone_checkpoint {path}: the checkpoint was converted for "
                         f"{ {k: v[0] for k, v in wrong.items()} } but the config says "
                         f"{ {k: v[1] for k, v in wrong.items()} }; run with {flags}")
    restored = ocp.StandardCheckpointer().restore(os.path.join(path, "state"),
                                                  {"frozen": abstract_frozen})
    return restored["frozen"]


@dataclasses.dataclass
class PyramidTask:
    """The Task protocol (cervix_jax/train/task.py) for PyramidConcatClassifier."""

    model: pyramid.PyramidConcatClassifier
    backbone_checkpoint: str
    model_config: object
    name: str = "pyramid"
    stage1: object = None                # config of a stage-1 run when backbone_checkpoint is one

    @property
    def num_features(self) -> int:
        return self.model.backbone.feature_size * len(self.model.levels)

    def init(self, rng: jax.Array, image_shape: tuple[int, int, int]) -> dict:
        """Random head from `rng`; backbone restored from config.model.backbone_checkpoint, else random
        from PRNGKey(RANDOM_BACKBONE_SEED) whatever `rng` (a fixed feature extractor for every seed)."""
        rng_backbone = jax.random.PRNGKey(RANDOM_BACKBONE_SEED)
        dummy = jnp.zeros((1, *_INIT_HW, 3), jnp.float32)
        if self.stage1 is not None:
            from cervix_jax.train import task_retinanet
            frozen = task_retinanet.load_stage1_backbone(self.backbone_checkpoint, self.stage1)
        elif self.backbone_checkpoint:
            abstract = jax.eval_shape(self.model.backbone.init, rng_backbone, dummy)
            frozen = load_backbone_checkpoint(self.backbone_checkpoint, abstract, self.model_config)
        else:   # eager: op-by-op compiles are cached across tasks, a jitted init recompiles per module
            frozen = self.model.backbone.init(rng_backbone, dummy)
        return {"params": self.init_params(rng), "frozen": frozen}

    def init_params(self, rng: jax.Array) -> dict:
        """The head part of `init(rng)`: {"classifier": {"kernel" [K, 2], "bias" [2]}}."""
        _, rng_head = jax.random.split(rng)
        return pyramid.init_head(rng_head, self.num_features, self.model.num_classes)

    def init_example_state(self, num_examples: int) -> Optional[dict]:
        return None

    def pyramid_maps(self, frozen: dict, images):
        """images [b, H, W, 3] -> {"C2".."C5", "P3".."P7"}, no gradient."""
        return jax.lax.stop_gradient(self.model.backbone.apply(frozen, images))

    def logits(self, params: dict, frozen: dict, images, valid=None):
        """images [b, H, W, 3] (+ valid [b, H, W]: GAP over the unpadded region) -> logits [b, 2]."""
        feature_map = pyramid.concat_levels(self.pyramid_maps(frozen, images), self.model.levels,
                                            self.model.upsample)
        return self.model.apply({"params": params}, pyramid.pool(feature_map, valid), method="logits")

    def loss(self, params, frozen, batch, example_state, rng):
        logits = self.logits(params, frozen, batch["image"], batch.get("valid"))
        weights = batch["weight"]
        loss = pyramid.cross_entropy(logits, batch["label"], weights)
        correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
        accuracy = jnp.sum(weights * correct) / jnp.maximum(jnp.sum(weights), 1.0)
        return loss, {"metrics": {"loss": loss, "accuracy": accuracy}, "example_state": None}

    def predict(self, params, frozen, batch):
        return jax.nn.softmax(self.logits(params, frozen, batch["image"], batch.get("valid")))[:, 1]

    def explainable(self, variables: dict):
        return pyramid.explainable(self.model, pyramid.join_variables(variables["params"],
                                                                      variables["frozen"]))

    def sweep_fast(self, config, points: list, workdir) -> list:
        """The sweep engine's hook: runs `points` from cached features; returns those left to it."""
        return run_sweep_fast(self, config, points, workdir)

    def sweep_report(self, config, workdir) -> Optional[dict]:
        """The sweep engine's hook after its summary: the paper's table, see `write_paper_table`."""
        return write_paper_table(config, workdir)


def make(config) -> PyramidTask:
    """Task factory registered as "pyramid" in cervix_jax/train/task.py."""
    from cervix_jax.train import task_retinanet
    m = config.model
    stage1 = task_retinanet.stage1_config(m.backbone_checkpoint) if m.backbone_checkpoint else None
    backbone = task_retinanet.backbone_module(stage1.model) if stage1 is not None else backbone_from_config(m)
    model = pyramid.PyramidConcatClassifier(levels=pyramid.parse_levels(m.levels), backbone=backbone,
                                            upsample=m.upsample)
    return PyramidTask(model=model, backbone_checkpoint=m.backbone_checkpoint, model_config=m, stage1=stage1)


# ---------------------------------------------------------------------------------------------
# Sweeps: every (model.levels, seed, data.blur) point from one backbone pass.

FAST_KEYS = ("model.levels", "seed", "data.blur")
REFERENCE_HEAD = ("P3", "P6", "P7")   # the paper's best head: paired differences are taken against it


def head_label(levels) -> str:
    """("P3", "P6", "P7") -> "P3+P6+P7"; all five -> "P3..P7"."""
    levels = pyramid.canonical_levels(levels)
    return "P3..P7" if levels == pyramid.LEVELS else "+".join(levels)


def _fast_unsupported(config, points) -> str:
    """Why the fast path cannot reproduce the ordinary runs of `points` ("" when it can)."""
    keys = sorted({k for p in points for k in p} - set(FAST_KEYS))
    if keys:
        return f"grid keys {keys} are not among {FAST_KEYS}"
    if config.model.upsample != "nearest_legacy":
        return f"model.upsample={config.model.upsample!r} (the feature cache is exact for 'nearest_legacy' only)"
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


def _every_example_once(loader):
    """A copy of a (shuffled, drop-remainder) training loader that yields each of its examples once,
    in `loader.indices` order, the last batch padded with weight 0."""
    c = copy.copy(loader)
    c.shuffle = False
    if hasattr(c, "drop_remainder"):        # cervix_jax.data.pipeline.Loader
        c.drop_remainder = False
    elif hasattr(c, "drop"):                # task_tiny.ArrayLoader ("memory/<n>" data)
        c.drop = False
    else:
        raise TypeError(f"sweep_fast: unknown training loader {type(loader).__name__}")
    return c


def _train_plan(loader, seed: int, epochs: int) -> np.ndarray:
    """Source indices [epochs * steps_per_epoch, global batch] that an ordinary run of `seed` trains on."""
    c = copy.copy(loader)
    c.seed = seed
    if hasattr(c, "plan"):                  # pipeline.Loader: its own rule
        return np.concatenate([c.plan(e)[0] for e in range(epochs)])
    # task_tiny.ArrayLoader: the same rule (permutation by default_rng([seed, epoch]), full batches)
    steps, g = len(c), c.batch
    rows = []
    for e in range(epochs):
        order = c.indices[np.random.default_rng([seed, e]).permutation(len(c.indices))] if c.shuffle else c.indices
        rows.append(order[:steps * g].reshape(steps, g))
    return np.concatenate(rows)


def _scores(cache: dict, levels, kernel, bias) -> np.ndarray:
    """P(class 1) [..., N] of heads (kernel [..., K, 2], bias [..., 2]) on cached features, as `predict`."""
    x = feature_cache.pooled_features({k: jnp.asarray(v) for k, v in cache["pooled"].items()}, levels)
    logits = jnp.einsum("nk,...kc->...nc", x, jnp.asarray(kernel)) + jnp.asarray(bias)[..., None, :]
    return np.asarray(jax.nn.softmax(logits)[..., 1])


def _select_checkpoint(val_rows: list[dict], train_config) -> tuple[int, int, float]:
    """(best epoch, last epoch trained, best value) as the engine's loop decides them: the best
    `best_metric` on validation at epoch ends (ties keep the earlier), early stop after `patience`."""
    from cervix_jax.train.checkpoint import lower_is_better
    metric = train_config.best_metric
    if metric not in val_rows[0]:
        raise KeyError(f"config.train.best_metric={metric!r}: expected one of {sorted(val_rows[0])}")
    worse = (lambda a, b: a >= b) if lower_is_better(metric) else (lambda a, b: a <= b)
    best, best_value, bad = None, None, 0
    for e, row in enumerate(val_rows):
        value = row[metric]
        if best_value is None or not worse(value, best_value):
            best, best_value, bad = e, value, 0
        else:
            bad += 1
            if train_config.patience and bad >= train_config.patience:
                return best, e, best_value
    return best, len(val_rows) - 1, best_value


def _jsonable(d: dict) -> dict:
    return {k: (np.asarray(v).tolist() if np.ndim(v) else float(v)) for k, v in d.items()}


def _write_scores(path: Path, scored: dict) -> None:
    """id,label,score with repr(float) scores: they read back to exactly the values the metrics saw."""
    rows = "".join(f"{i},{lab},{float(v)!r}\n" for i, lab, v in zip(scored["id"], scored["label"], scored["score"]))
    path.write_text("id,label,score\n" + rows)


def read_scores(path) -> dict:
    """A scores_<split>.csv -> {"id" int64, "label" int64, "score" float64}."""
    rows = list(csv.DictReader(Path(path).open()))
    return {"id": np.array([int(r["id"]) for r in rows], np.int64),
            "label": np.array([int(r["label"]) for r in rows], np.int64),
            "score": np.array([float(r["score"]) for r in rows], np.float64)}


def run_sweep_fast(task, config, points: list, workdir) -> list:
    """Runs `points` ((model.levels, seed, data.blur) grid points) together; returns the points left to
    the ordinary loop (all of them, with the reason printed, when the grid has other keys).

    One backbone pass over train, val and (once per blur level) test; every (levels, seed) head trained
    in one vmapped program on the batches an ordinary run of that seed sees; per head the epoch-end
    snapshot the ordinary loop would keep as best (`train.best_metric` on clean val), its threshold
    chosen on clean val, test scored once per blur level. Writes per point what `launch.py train` +
    `eval` would: config.json, train_summary.json, metrics.jsonl, eval/metrics.json,
    eval/scores_{val,test}.csv, plus head.npz (the kept head; no Orbax checkpoint, no figures).
    """
    from cervix_jax import metrics as M
    from cervix_jax.train.loop import local_data, val_metrics
    from cervix_jax.train.state import make_optimizer
    from cervix_jax.train.sweep import point_config, point_name

    reason = _fast_unsupported(config, points)
    if reason:
        print(f"sweep: fast path off ({reason}); one ordinary run per point", flush=True)
        return list(points)
    t_start = time.time()
    workdir = Path(workdir)
    pcs = [point_config(config, p) for p in points]
    seeds = sorted({int(pc.seed) for pc in pcs})
    blurs = sorted({int(pc.data.blur) for pc in pcs})
    subsets = list(dict.fromkeys(pyramid.parse_levels(pc.model.levels) for pc in pcs))
    print(f"sweep (fast path): {len(points)} points = {len(subsets)} heads x {len(seeds)} seeds x "
          f"blur {blurs}, from one backbone pass", flush=True)

    data = {k: local_data(point_config(config, {"data.blur": k})) for k in blurs}
    d0 = data[blurs[0]]                     # train and val do not depend on data.blur
    frozen = task.init(jax.random.PRNGKey(seeds[0]), d0.image_shape)["frozen"]
    pool_fn = feature_cache.make_pool_fn(task, config.model.upsample)

    def features(loader, desc):
        return feature_cache.extract(task, frozen, _Sized(loader.epoch(0), len(loader)), pool_fn=pool_fn,
                                     desc=desc)

    train_loader = _every_example_once(d0.train)
    train_cache = features(train_loader, "features train")
    if len(train_cache["id"]) != len(train_loader.indices):
        raise RuntimeError(f"sweep_fast: {len(train_cache['id'])} train features for "
                           f"{len(train_loader.indices)} train examples")
    val_cache = features(d0.eval["val"], "features val")
    test_caches = {k: features(data[k].eval["test"], f"features test blur {k}") for k in blurs}
    for name, cache in [("val", val_cache)] + [(f"test blur {k}", c) for k, c in test_caches.items()]:
        if len(np.unique(cache["id"])) != len(cache["id"]):
            raise RuntimeError(f"sweep_fast: some {name} example was scored twice")
    t_features = time.time()
    print(f"sweep (fast path): features of {len(train_cache['id'])} train, {len(val_cache['id'])} val, "
          f"{len(test_caches[blurs[0]]['id'])} test images x {len(blurs)} blur levels in "
          f"{t_features - t_start:.1f} s (with data loading, backbone init and compilation)", flush=True)
    test_ids = test_caches[blurs[0]]["id"]
    for k, c in test_caches.items():
        if not np.array_equal(c["id"], test_ids):
            raise RuntimeError(f"sweep_fast: test examples with blur {k} differ from blur {blurs[0]}")

    # Batch orders: rows of train_cache that step t of an ordinary run of each seed trains on.
    tc = config.train
    steps_per_epoch = len(d0.train)
    if steps_per_epoch == 0:
        raise ValueError(f"config.train.batch_size={tc.batch_size} is larger than the training split")
    row_of = np.full(int(np.max(train_loader.indices)) + 1, -1, np.int64)
    row_of[np.asarray(train_loader.indices)] = np.arange(len(train_loader.indices))
    orders = {s: row_of[_train_plan(d0.train, s, tc.epochs)] for s in seeds}
    for s in seeds:   # guard: the plan is what the engine's loader really yields
        c = copy.copy(d0.train)
        c.seed = s
        first = np.asarray(next(iter(c.epoch(0)))["id"]).reshape(-1)
        if not np.array_equal(first, train_cache["id"][orders[s][0]]):
            raise RuntimeError("sweep_fast: the reconstructed batch order differs from the training "
                               "loader's; run with --config.sweep.fast=False")

    heads = feature_cache.train_heads(
        train_cache, subsets, seeds, steps=tc.epochs * steps_per_epoch, optimizer=make_optimizer(tc),
        init_rng=lambda s: jax.random.fold_in(jax.random.PRNGKey(s), 0),   # as state.create_state
        orders=orders, snapshot_every=steps_per_epoch, progress=True)

    print(f"sweep (fast path): {len(heads)} heads x {tc.epochs * steps_per_epoch} steps trained together in "
          f"{time.time() - t_features:.1f} s", flush=True)
    chosen = {}
    for (levels, seed), h in heads.items():
        snap = h["snapshots"]
        val_epochs = _scores(val_cache, levels, snap["kernel"], snap["bias"])     # [epochs, n_val]
        rows = [val_metrics({"score": v, "label": val_cache["label"]}) for v in val_epochs]
        best, last, best_value = _select_checkpoint(rows, tc)
        val_scored = {"id": val_cache["id"], "label": val_cache["label"], "score": val_epochs[best]}
        threshold = float(M.choose_threshold(val_scored["score"], val_scored["label"]))
        loss = np.asarray(h["loss"])
        chosen[(levels, seed)] = dict(best=best, last=last, best_value=best_value, rows=rows, loss=loss,
                                      kernel=snap["kernel"][best], bias=snap["bias"][best],
                                      val=val_scored, threshold=threshold)

    seconds = round(time.time() - t_start, 2)
    for p, pc in zip(points, pcs):
        levels, seed, blur = pyramid.parse_levels(pc.model.levels), int(pc.seed), int(pc.data.blur)
        h = chosen[(levels, seed)]
        tcache = test_caches[blur]
        test_scored = {"id": tcache["id"], "label": tcache["label"],
                       "score": _scores(tcache, levels, h["kernel"], h["bias"])}
        pdir = workdir / "points" / point_name(p)
        (pdir / "eval").mkdir(parents=True, exist_ok=True)
        (pdir / "config.json").write_text(pc.to_json_best_effort(indent=2, sort_keys=True))
        best_step = (h["best"] + 1) * steps_per_epoch
        last_step = (h["last"] + 1) * steps_per_epoch
        log = []
        for e in range(h["last"] + 1):
            epoch_loss = h["loss"][e * steps_per_epoch:(e + 1) * steps_per_epoch]
            log.append({"step": (e + 1) * steps_per_epoch, "epoch": e, "split": "train",
                        "loss": float(epoch_loss.mean())})
            log.append({"step": (e + 1) * steps_per_epoch, "epoch": e, "split": "val", **h["rows"][e]})
        (pdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        stopped = h["last"] + 1 < tc.epochs
        (pdir / "train_summary.json").write_text(json.dumps({
            "status": "stopped_early" if stopped else "finished", "step": last_step,
            "epoch": h["last"] + 1, "total_steps": tc.epochs * steps_per_epoch, "best_metric": tc.best_metric,
            "best_value": h["best_value"], "best_step": best_step, "final_loss": float(h["loss"][last_step - 1]),
            "seconds": seconds, "fast_path": True}, indent=2))
        np.savez(pdir / "head.npz", kernel=np.asarray(h["kernel"]), bias=np.asarray(h["bias"]),
                 step=best_step, levels=np.array(levels))
        result = {"checkpoint_step": best_step, "blur": blur, "fast_path": True,
                  "thresholds": {"default": 0.5, "val_chosen": h["threshold"]}}
        for split, sc in (("val", h["val"]), ("test", test_scored)):
            result[split] = {"n": int(len(sc["id"])),
                             "at_0.5": _jsonable(M.binary_metrics(sc["score"], sc["label"], 0.5)),
                             "at_val_threshold": _jsonable(M.binary_metrics(sc["score"], sc["label"],
                                                                             h["threshold"]))}
        _write_scores(pdir / "eval" / "scores_val.csv", h["val"])
        _write_scores(pdir / "eval" / "scores_test.csv", test_scored)
        tmp = pdir / "eval" / "metrics.json.tmp"       # metrics.json marks the point done: write it last
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, pdir / "eval" / "metrics.json")
    print(f"sweep (fast path): {len(points)} points in {time.time() - t_start:.1f} s", flush=True)
    return []


# ---------------------------------------------------------------------------------------------
# The paper's table from the per-point files (fast or ordinary runs alike).

def groups_by_id(config) -> dict[int, int]:
    """Example id -> group (woman/session) of config.data, for bootstrap resampling by group."""
    dc = config.data
    if dc.name.startswith("memory/"):
        from cervix_jax.train import task_tiny
        arrays = task_tiny.memory_examples(int(dc.name.split("/", 1)[1]), tuple(dc.pad_to))
        return dict(zip(arrays["id"].tolist(), arrays["group"].tolist()))
    from cervix_jax.data import builders, pipeline
    source, _ = builders.load_source(dc)
    index = pipeline.index_source(source)
    return dict(zip(np.asarray(index["id"]).tolist(), np.asarray(index["group"]).tolist()))


def _mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else float("nan"))


def _fmt(mean: float, sd: float = float("nan"), digits: int = 4) -> str:
    if np.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if np.isnan(sd) else f" ± {sd:.{digits}f}")


def _clean(x: float) -> float:
    """Differences of seed-mean accuracies carry float noise (-1e-17): round it away (and -0.0)."""
    return round(float(x), 12) + 0.0


def _fmt_interval(iv: Optional[dict], signed: bool = False) -> str:
    if not iv:
        return ""
    f = "+.4f" if signed else ".4f"
    low, high, est = _clean(iv["low"]), _clean(iv["high"]), _clean(iv["estimate"])
    star = " *" if signed and (low > 0 or high < 0) else ""
    return f"{est:{f}} [{low:{f}}, {high:{f}}]{star}"


def write_paper_table(config, workdir, *, n_boot: int = 1000, boot_seed: int = 0) -> Optional[dict]:
    """Paper B's table from the sweep's per-point files: `WORKDIR/paper_table.md` and `.csv`.

    Rows: the heads of the grid's `model.levels`; for each `data.blur` level: test accuracy and F1 at
    each seed's validation-chosen threshold and AUC, mean ± sd over seeds; a 95% percentile bootstrap
    interval (`metrics.bootstrap_ci`, test groups resampled) of the seed-mean accuracy; and the paired
    difference P3+P6+P7 minus each head (`metrics.paired_bootstrap_diff`), paired per seed: the
    statistic is the mean over seeds of the per-seed accuracy difference, each head and seed at its own
    val-chosen threshold, with the same group resample for both heads and all seeds. Computed on
    the per-example seed-mean correctness c[i] = mean_s 1[(score_s[i] >= t_s) == y[i]], whose mean is
    the seed-mean accuracy. None when the grid has no `model.levels` or no point is done.
    """
    from cervix_jax import metrics as M
    from cervix_jax.train.sweep import grid_points, point_name

    workdir = Path(workdir)
    if "model.levels" not in dict(config.sweep.grid):
        return None
    records: dict = {}
    for p in grid_points(config):
        pdir = workdir / "points" / point_name(p)
        if not (pdir / "eval" / "metrics.json").exists():
            continue
        m = json.loads((pdir / "eval" / "metrics.json").read_text())
        head = pyramid.parse_levels(p["model.levels"])
        blur = int(p.get("data.blur", config.data.blur))
        records.setdefault((head, blur), {})[int(p.get("seed", config.seed))] = {
            "metrics": m["test"]["at_val_threshold"], "threshold": m["thresholds"]["val_chosen"],
            "scores": read_scores(pdir / "eval" / "scores_test.csv")}
    if not records:
        return None
    heads = list(dict.fromkeys(pyramid.parse_levels(v) for v in dict(config.sweep.grid)["model.levels"]))
    heads = [h for h in heads if any(k[0] == h for k in records)]
    blurs = sorted({k[1] for k in records})
    headline = 0 if 0 in blurs else blurs[0]
    group_of = groups_by_id(config)
    ref = REFERENCE_HEAD if any(k[0] == REFERENCE_HEAD for k in records) else None

    def correctness(rec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, labels, seed-mean correctness) of one (head, blur) over its seeds."""
        seeds = sorted(rec)
        ids = rec[seeds[0]]["scores"]["id"]
        labels = rec[seeds[0]]["scores"]["label"]
        hits = []
        for s in seeds:
            sc = rec[s]["scores"]
            if not np.array_equal(sc["id"], ids):
                raise ValueError("paper table: seeds were scored on different test examples")
            hits.append((sc["score"] >= rec[s]["threshold"]).astype(np.int64) == labels)
        return ids, labels, np.mean(hits, axis=0)

    mean_acc = lambda c, y: float(np.mean(c))
    rows, stats = [], {}
    for head in heads:
        for blur in blurs:
            rec = records.get((head, blur))
            if not rec:
                continue
            ids, labels, corr = correctness(rec)
            groups = np.array([group_of[int(i)] for i in ids])
            row = {"head": head_label(head), "levels": ",".join(head), "blur": blur, "n_seeds": len(rec),
                   "seeds": " ".join(map(str, sorted(rec))), "n_test": len(ids),
                   "n_test_groups": len(np.unique(groups))}
            for name in ("accuracy", "f1", "auc", "balanced_accuracy", "precision", "recall"):
                row[name], row[name + "_sd"] = _mean_sd([rec[s]["metrics"][name] for s in sorted(rec)])
            ci = M.bootstrap_ci(mean_acc, corr, labels, groups, n_boot=n_boot, seed=boot_seed)
            row["accuracy_ci_low"], row["accuracy_ci_high"] = ci["low"], ci["high"]
            stats[(head, blur)] = {"ids": ids, "labels": labels, "corr": corr, "groups": groups,
                                   "seeds": sorted(rec), "ci": ci}
            rows.append(row)
    for row in rows:
        head, blur = pyramid.parse_levels(row["levels"].lower()), row["blur"]
        row["diff_ref_minus_head"] = row["diff_low"] = row["diff_high"] = float("nan")
        a, b = stats.get((ref, blur)), stats[(head, blur)]
        if ref is None or head == ref or a is None:
            continue
        if not np.array_equal(a["ids"], b["ids"]) or a["seeds"] != b["seeds"]:
            continue   # not paired: different test examples or seeds
        d = M.paired_bootstrap_diff(mean_acc, a["corr"], b["corr"], a["labels"], a["groups"],
                                    n_boot=n_boot, seed=boot_seed)
        d = {**d, "estimate": _clean(d["estimate"]), "low": _clean(d["low"]), "high": _clean(d["high"])}
        row["diff_ref_minus_head"], row["diff_low"], row["diff_high"] = d["estimate"], d["low"], d["high"]
        stats[(head, blur)]["diff"] = d

    header = ["head", "levels", "blur", "n_seeds", "seeds", "n_test", "n_test_groups"]
    for name in ("accuracy", "f1", "auc", "balanced_accuracy", "precision", "recall"):
        header += [name, name + "_sd"]
    header += ["accuracy_ci_low", "accuracy_ci_high", "diff_ref_minus_head", "diff_low", "diff_high"]
    with (workdir / "paper_table.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)

    by = {(pyramid.parse_levels(r["levels"].lower()), r["blur"]): r for r in rows}
    any_row = rows[0]
    ref_name = head_label(REFERENCE_HEAD)
    md = [f"Test set: {any_row['n_test']} images in {any_row['n_test_groups']} groups; seeds "
          f"{any_row['seeds']}. Accuracy and F1 at each seed's threshold chosen on the (clean) validation "
          f"split, AUC threshold-free; mean ± sd over seeds. 95% CI: percentile bootstrap of the seed-mean "
          f"accuracy, test groups resampled ({n_boot} resamples). Δ = {ref_name} minus the head, paired per "
          f"seed (mean over seeds of the per-seed accuracy difference, the same group resample for both "
          f"heads and every seed); * = the interval excludes 0.", ""]
    md += [f"Clean test images (blur {headline}):", "",
           f"| head | accuracy | 95% CI | F1 | AUC | Δ accuracy ({ref_name} − head) [95% CI] |",
           "|---|---|---|---|---|---|"]
    for head in heads:
        r = by.get((head, headline))
        if r is None:
            continue
        d = stats[(head, headline)].get("diff")
        md.append(f"| {r['head']} | {_fmt(r['accuracy'], r['accuracy_sd'])} | "
                  f"[{r['accuracy_ci_low']:.4f}, {r['accuracy_ci_high']:.4f}] | {_fmt(r['f1'], r['f1_sd'])} | "
                  f"{_fmt(r['auc'], r['auc_sd'])} | {_fmt_interval(d, signed=True) or '—'} |")
    if len(blurs) > 1:
        for title, name in (("accuracy", "accuracy"), ("F1", "f1"), ("AUC", "auc")):
            md += ["", f"Test {title} by Gaussian blur kernel size k (test images only):", "",
                   "| head | " + " | ".join(f"k = {b}" for b in blurs) + " |", "|---" * (len(blurs) + 1) + "|"]
            for head in heads:
                cells = [_fmt(by[(head, b)][name], by[(head, b)][name + "_sd"]) if (head, b) in by else ""
                         for b in blurs]
                md.append(f"| {head_label(head)} | " + " | ".join(cells) + " |")
        if ref is not None:
            md += ["", f"Δ accuracy ({ref_name} − head) [95% paired CI] by blur:", "",
                   "| head | " + " | ".join(f"k = {b}" for b in blurs) + " |", "|---" * (len(blurs) + 1) + "|"]
            for head in heads:
                if head == ref:
                    continue
                cells = [_fmt_interval(stats.get((head, b), {}).get("diff"), signed=True) for b in blurs]
                md.append(f"| {head_label(head)} | " + " | ".join(cells) + " |")
    (workdir / "paper_table.md").write_text("\n".join(md) + "\n")
    return {"markdown": str(workdir / "paper_table.md"), "csv": str(workdir / "paper_table.csv"),
            "rows": len(rows)}
