"""The training loop (the ordinary trainer): `train(config, workdir) -> summary dict`.

Deterministic given the config: step k sees batch k of the (seed, epoch) permutation and RNG
fold_in(rng, k), so a resumed run equals an uninterrupted one bitwise (on CPU). Validation runs at
every epoch end (`val_<metric>` from `cervix_jax.metrics.binary_metrics` at 0.5); the best
checkpoint and early stopping follow `checkpoint.BestTracker` on `config.train.best_metric`. Rows go
to the run directory through `rundir.MetricsLog` (metrics.jsonl and TensorBoard).
"""
from __future__ import annotations

import functools
import math
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import jax
import numpy as np

from cervix_jax.train import checkpoint as ckpt_lib
from cervix_jax.train import rundir
from cervix_jax.train.data import Data, local_data
from cervix_jax.train.parallel import data_parallel, to_host
from cervix_jax.train.scoring import score_split, val_metrics
from cervix_jax.train.state import create_state, make_optimizer
from cervix_jax.train.steps import eval_step, train_step
from cervix_jax.train.task import make_task


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the message names step, epoch, batch and example ids."""


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
    """Train rows averaged over `every` steps and the val rows, into the run directory (process 0),
    plus a tqdm bar on a terminal, plain lines otherwise."""

    def __init__(self, workdir: Path, *, start: int, total: int, every: int, batch_size: int):
        self.main = jax.process_index() == 0
        self.log = rundir.MetricsLog(workdir, resume_step=start) if self.main else None
        self.every, self.total, self.batch_size = every, total, batch_size
        self.bar = None
        if self.main and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
        self.t0, self.s0, self.acc = time.time(), start, []

    def write(self, row: dict) -> None:
        if self.log is not None:
            self.log.append(row)

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
        if self.log is not None:
            self.log.close()


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
    restored = ckpts.restore(state)
    meta = None
    if restored is not None:
        state, meta = restored
    tracker = ckpt_lib.BestTracker(tc.best_metric, tc.patience, meta)
    step = int(state.step)
    steps_per_epoch = len(data.train)
    if steps_per_epoch == 0:
        raise ValueError(f"config.train.batch_size={tc.batch_size} is larger than the training split")
    total = tc.epochs * steps_per_epoch

    def should_save(step: int) -> bool:
        """At every epoch end (validation ran: the best may have changed) and every checkpoint_every."""
        return step % steps_per_epoch == 0 or step % tc.checkpoint_every == 0

    p_train = data_parallel(functools.partial(train_step, task=task, optimizer=optimizer),
                            config.parallel.wrapper, num_replicated=2, donate_first=True)
    p_eval = data_parallel(functools.partial(eval_step, task=task), config.parallel.wrapper, num_replicated=2)
    status, t_start, last_loss = "finished", time.time(), None
    log = _Logger(workdir, start=step, total=total, every=tc.log_every, batch_size=tc.batch_size)
    if restored is not None:
        log.message(f"resumed from {ckpts.directory}/{step} (epoch {step // steps_per_epoch})")
    try:
        with _StopFlag() as stop:
            for epoch in range(step // steps_per_epoch, tc.epochs):
                if tracker.stopped or stop.signal:
                    break
                for i, batch in enumerate(data.train.epoch(epoch, start_step=step % steps_per_epoch),
                                          start=step % steps_per_epoch):
                    state, metrics = p_train(state, frozen, batch)
                    metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    last_loss = metrics["loss"]
                    if not math.isfinite(last_loss):
                        good = ckpts.steps()
                        ids = np.asarray(batch["id"]).ravel().tolist()
                        raise NonFiniteLossError(
                            f"non-finite loss {last_loss} at step {step + 1} (epoch {epoch}, batch {i} of "
                            f"the epoch), example ids {ids}; stopped without saving; last good "
                            f"checkpoint: {good[-1] if good else 'none'} in {ckpts.directory}")
                    step += 1
                    log.train(step, epoch, metrics)
                    val = None
                    if step % steps_per_epoch == 0:
                        val = val_metrics(score_split(p_eval, state.params, frozen, data.eval["val"]))
                        value = tracker.value_of(val)
                        log.write({"step": step, "epoch": epoch, "split": "val", **val})
                        if jax.process_index() == 0:
                            task.on_epoch_end(to_host(state.example_state), epoch + 1, workdir, data)
                        _, stop_early = tracker.update(step, value)
                        if stop_early:
                            status = "stopped_early"
                            log.message(f"early stop at epoch {epoch}: {tc.best_metric} did not improve "
                                        f"for {tc.patience} epochs (best {tracker.meta['best_value']:.4f} "
                                        f"at step {tracker.meta['best_step']})")
                    if should_save(step) or stop.signal:
                        ckpts.save(step, state, tracker.meta, metrics=val)
                    if stop.signal:
                        status = "interrupted"
                        log.message(f"{stop.signal}: saved checkpoint {step}; run the same command to resume")
                        break
    finally:
        log.close()
        ckpts.close()
    summary = {"status": "stopped_early" if tracker.stopped else status, "step": step,
               "epoch": step // steps_per_epoch, "total_steps": total, "best_metric": tc.best_metric,
               "best_value": tracker.meta["best_value"], "best_step": tracker.meta["best_step"],
               "final_loss": last_loss, "seconds": round(time.time() - t_start, 2)}
    if jax.process_index() == 0:
        rundir.write_train_summary(workdir, summary)
    return summary
