"""The training loop: `train(config, workdir) -> summary dict`.

Deterministic given the config: step k sees batch k of the (seed, epoch) permutation and RNG
fold_in(rng, k), so a resumed run equals an uninterrupted one bitwise (on CPU). Validation runs at
every epoch end (`val_<metric>` from `cervix_jax.metrics.binary_metrics` at 0.5); the best
checkpoint and early stopping watch `config.train.best_metric`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import numpy as np

from cervix_jax.train import checkpoint as ckpt_lib
from cervix_jax.train.parallel import data_parallel, to_host
from cervix_jax.train.state import create_state, make_optimizer
from cervix_jax.train.steps import eval_step, train_step
from cervix_jax.train.task import make_task

SPLITS = ("train", "val", "test")


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the message names step, epoch, batch and example ids."""


@dataclasses.dataclass
class Data:
    """What the engine needs of a dataset. `train` yields shuffled full batches; `eval[split]`
    yields every example of the split once, last batch padded with weight 0. `examples(split, n)`
    gives the first n examples of a split as per-example dicts (image, display, label, id, masks)."""

    train: Any
    eval: dict
    num_examples: int
    image_shape: tuple[int, int, int]
    examples: Callable[[str, int], list]


def make_data(config, *, num_devices: int, process_index: int, process_count: int) -> Data:
    """`memory/<n>` data (tests, smoke runs) or a tfds source through `cervix_jax.data`."""
    dc, batch = config.data, config.train.batch_size
    common = dict(global_batch_size=batch, num_devices=num_devices, process_index=process_index,
                  process_count=process_count)
    if dc.name.startswith("memory/"):
        from cervix_jax.train import task_tiny
        arrays = task_tiny.memory_examples(int(dc.name.split("/", 1)[1]), tuple(dc.pad_to))
        parts = task_tiny.memory_split(arrays["group"], dc.test_fraction, dc.val_fraction, dc.split_seed)
        make = functools.partial(task_tiny.ArrayLoader, arrays, **common)

        def examples(split, n):
            out = []
            for i in parts[split][:n]:
                out.append({"image": arrays["image"][i].astype(np.float32) / 255.0,
                            "display": arrays["image"][i], "label": int(arrays["label"][i]),
                            "id": int(arrays["id"][i]), "lesion_mask": arrays["lesion_mask"][i]})
            return out

        return Data(train=make(parts["train"], shuffle=True, seed=config.seed, drop_remainder=True),
                    eval={s: make(parts[s], shuffle=False, seed=0, drop_remainder=False) for s in ("val", "test")},
                    num_examples=len(arrays["id"]), image_shape=(*dc.pad_to, 3), examples=examples)

    from cervix_jax.data import builders, pipeline, split as split_lib
    source, _ = builders.load_source(dc)
    if dc.get("pixel_cache", ""):   # decoded, resized pixels from a memory map (docs/performance.md)
        from cervix_jax.data import pixel_cache
        source = pixel_cache.open_or_build(source, dc.pixel_cache, dc.name, image_size=dc.image_size,
                                           pad_to=tuple(dc.pad_to))
    index = pipeline.index_source(source)
    if dc.label != "label":  # train on another label set the examples carry (synthetic data has both)
        values = np.asarray(index[dc.label])
        if (values < 0).any():
            raise ValueError(f"config.data.label={dc.label!r}: {int((values < 0).sum())} of {len(values)} "
                             f"examples of {dc.name} have no {dc.label!r} label; use 'label'")
        source, index = _Relabeled(source, dc.label), {**index, "label": values}
    parts = split_lib.group_split(np.asarray(index["label"]), np.asarray(index["group"]),
                                  test_fraction=dc.test_fraction, val_fraction=dc.val_fraction,
                                  seed=dc.split_seed)
    # Paper B's degradation: test images only are blurred (data.blur), on the resized uint8 image
    # before normalisation and padding, as OpenCV would; train and val (threshold choice) stay clean.
    def pre_for(split, *, with_masks=dc.with_masks):
        return functools.partial(pipeline.preprocess, image_size=dc.image_size, pad_to=tuple(dc.pad_to),
                                 normalization=dc.normalization, with_masks=with_masks,
                                 blur=dc.blur if split == "test" else 0)

    def examples(split, n):
        pre = pre_for(split, with_masks=True)
        out = []
        for i in parts[split][:n]:
            ex = pre(source[int(i)])
            item = {k: v for k, v in ex.items() if k.endswith("_mask")}
            item.update(image=ex["image"], display=ex["display"], label=int(ex["label"]), id=int(ex["id"]),
                        valid=ex["valid"])
            out.append(item)
        return out

    return Data(train=pipeline.Loader(source, parts["train"], preprocess_fn=pre_for("train"), shuffle=True,
                                      seed=config.seed, drop_remainder=True, **common),
                eval={s: pipeline.Loader(source, parts[s], preprocess_fn=pre_for(s), shuffle=False, seed=0,
                                         drop_remainder=False, **common) for s in ("val", "test")},
                num_examples=len(source), image_shape=(*dc.pad_to, 3), examples=examples)


class _Relabeled:
    """A random-access source whose examples' `label` is their `key` field."""

    def __init__(self, source, key: str):
        self.source, self.key = source, key

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i):
        example = self.source[i]
        return {**example, "label": example[self.key]}


def local_data(config) -> Data:
    return make_data(config, num_devices=jax.local_device_count(), process_index=jax.process_index(),
                     process_count=jax.process_count())


def score_split(p_eval: Callable, params, frozen, loader) -> dict[str, np.ndarray]:
    """Scores every example of `loader` exactly once: dict id, label, score sorted by id."""
    parts = [jax.device_get(p_eval(params, frozen, b)) for b in loader.epoch(0)]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("id", "label", "score", "weight")}
    keep = cat["weight"] > 0
    out = {k: cat[k][keep] for k in ("id", "label", "score")}
    order = np.argsort(out["id"], kind="stable")
    out = {k: v[order] for k, v in out.items()}
    if len(np.unique(out["id"])) != len(out["id"]):
        raise RuntimeError("evaluation scored some example twice: the loader's padding is not weight 0")
    return out


def val_metrics(scored: dict) -> dict[str, float]:
    from cervix_jax.metrics import binary_metrics
    m = binary_metrics(scored["score"], scored["label"], 0.5)
    return {f"val_{k}": float(v) for k, v in m.items() if np.ndim(v) == 0}


class _StopFlag:
    """SIGTERM/SIGINT set `.signal`; the loop saves and exits at the next step boundary."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._set) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _set(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class _Logger:
    """metrics.jsonl (process 0) plus a tqdm bar on a terminal, plain lines otherwise."""

    def __init__(self, workdir: Path, *, start: int, total: int, every: int, batch_size: int):
        self.main = jax.process_index() == 0
        self.path = workdir / "metrics.jsonl"
        self.every, self.total, self.batch_size = every, total, batch_size
        if self.main and self.path.exists():  # drop rows a killed run wrote after its checkpoint
            rows = [r for r in self.path.read_text().splitlines() if r.strip()]
            keep = [r for r in rows if _row_step(r) <= start]
            self.path.write_text("".join(r + "\n" for r in keep))
        self.tty = sys.stderr.isatty()
        self.bar = None
        if self.main and self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
        self.t0, self.s0, self.acc = time.time(), start, []

    def write(self, row: dict) -> None:
        if self.main:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def train(self, step: int, epoch: int, metrics: dict) -> None:
        self.acc.append(metrics)
        if self.bar is not None:
            self.bar.update(1)
        if step % self.every and step != self.total:
            return
        dt = max(time.time() - self.t0, 1e-9)
        ips = (step - self.s0) * self.batch_size / dt
        mean = {k: float(np.mean([m[k] for m in self.acc])) for k in self.acc[0]}
        self.write({"step": step, "epoch": epoch, "split": "train", **mean, "images_per_s": ips})
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{mean['loss']:.4f}", img_s=f"{ips:.1f}")
        elif self.main:
            eta = (self.total - step) * dt / max(step - self.s0, 1)
            print(f"step {step}/{self.total} epoch {epoch} loss {mean['loss']:.4f} "
                  f"{ips:.1f} img/s eta {time.strftime('%H:%M:%S', time.gmtime(eta))}", flush=True)
        self.t0, self.s0, self.acc = time.time(), step, []

    def message(self, text: str) -> None:
        if self.main:
            (self.bar.write if self.bar is not None else functools.partial(print, flush=True))(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _row_step(row: str) -> int:
    try:
        return int(json.loads(row).get("step", 0))
    except (ValueError, AttributeError):
        return 0


def train(config, workdir, *, data: Optional[Data] = None) -> dict:
    """Trains (or resumes) the run in `workdir`; returns and writes `train_summary.json`:
    status ("finished" | "stopped_early" | "interrupted"), step, epoch, best_step, best_value."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tc = config.train
    task = make_task(config)
    data = data or local_data(config)
    optimizer = make_optimizer(tc)
    state, frozen = create_state(task, optimizer, seed=config.seed, image_shape=data.image_shape,
                                 num_examples=data.num_examples)
    ckpts = ckpt_lib.Checkpoints(workdir / "checkpoints", keep=tc.keep, best_metric=tc.best_metric)
    meta = {"best_value": None, "best_step": None, "bad_epochs": 0, "stopped_early": False}
    restored = ckpts.restore(state)
    if restored is not None:
        state, meta = restored
    step = int(state.step)
    steps_per_epoch = len(data.train)
    if steps_per_epoch == 0:
        raise ValueError(f"config.train.batch_size={tc.batch_size} is larger than the training split")
    total = tc.epochs * steps_per_epoch
    p_train = data_parallel(functools.partial(train_step, task=task, optimizer=optimizer),
                            config.parallel.wrapper, num_replicated=2, donate_first=True)
    p_eval = data_parallel(functools.partial(eval_step, task=task), config.parallel.wrapper, num_replicated=2)
    worse = (lambda a, b: a >= b) if ckpt_lib.lower_is_better(tc.best_metric) else (lambda a, b: a <= b)
    status, t_start, last_loss = "finished", time.time(), None
    log = _Logger(workdir, start=step, total=total, every=tc.log_every, batch_size=tc.batch_size)
    if restored is not None:
        log.message(f"resumed from {ckpts.directory}/{step} (epoch {step // steps_per_epoch})")
    try:
        with _StopFlag() as stop:
            batches = None
            while step < total and not meta["stopped_early"]:
                epoch, i = divmod(step, steps_per_epoch)
                if batches is None:
                    batches = data.train.epoch(epoch, start_step=i)
                batch = next(batches)
                state, metrics = p_train(state, frozen, batch)
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                last_loss = metrics["loss"]
                if not math.isfinite(last_loss):
                    good = ckpts.steps()
                    raise NonFiniteLossError(
                        f"non-finite loss {last_loss} at step {step + 1} (epoch {epoch}, batch {i} of the "
                        f"epoch), example ids {np.asarray(batch['id']).ravel().tolist()}; stopped without "
                        f"saving; last good checkpoint: {good[-1] if good else 'none'} in {ckpts.directory}")
                step += 1
                log.train(step, epoch, metrics)
                val = None
                if step % steps_per_epoch == 0:
                    batches = None
                    val = val_metrics(score_split(p_eval, state.params, frozen, data.eval["val"]))
                    if tc.best_metric not in val:
                        raise KeyError(f"config.train.best_metric={tc.best_metric!r}: expected one of {sorted(val)}")
                    log.write({"step": step, "epoch": epoch, "split": "val", **val})
                    if hasattr(task, "on_epoch_end") and jax.process_index() == 0:
                        task.on_epoch_end(to_host(state.example_state), epoch + 1, workdir, data)
                    value = val[tc.best_metric]
                    if meta["best_value"] is None or not worse(value, meta["best_value"]):
                        meta.update(best_value=value, best_step=step, bad_epochs=0)
                    else:
                        meta["bad_epochs"] += 1
                        if tc.patience and meta["bad_epochs"] >= tc.patience:
                            meta["stopped_early"] = True
                            status = "stopped_early"
                            log.message(f"early stop at epoch {epoch}: {tc.best_metric} did not improve "
                                        f"for {tc.patience} epochs (best {meta['best_value']:.4f} at step "
                                        f"{meta['best_step']})")
                if (val is not None or step % tc.checkpoint_every == 0 or step == total
                        or stop.signal or meta["stopped_early"]):
                    ckpts.save(step, state, meta, metrics=val)
                if stop.signal:
                    status = "interrupted"
                    log.message(f"{stop.signal}: saved checkpoint {step}; run the same command to resume")
                    break
    finally:
        log.close()
        ckpts.close()
    summary = {"status": "stopped_early" if meta["stopped_early"] else status, "step": step,
               "epoch": step // steps_per_epoch, "total_steps": total, "best_metric": tc.best_metric,
               "best_value": meta["best_value"], "best_step": meta["best_step"], "final_loss": last_loss,
               "seconds": round(time.time() - t_start, 2)}
    if jax.process_index() == 0:
        (workdir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
