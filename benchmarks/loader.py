"""Does the input pipeline keep up with paper B's train step? Images/s of each, side by side.

    .venv/bin/python benchmarks/loader.py                 # paper B size: 800x1200, batch 8, "unit"
    .venv/bin/python benchmarks/loader.py --steps 3 --source-images 16

Loader rows: an in-memory source of random uint8 images (what `as_data_source` hands over), through
`pipeline.preprocess` and `pipeline.Loader` with its default threads; "resize" rows start from a
source twice the size (1600x2400), so PIL's antialiased resize is part of the cost. Step row: the
real paper B train step (`configs/pyramid.py`, ResNet50-FPN frozen + P3/P6/P7 head, through
`make_task`, `create_state`, `train_step`, `data_parallel`) when it imports; otherwise a stand-in
(a jitted 3-layer conv forward), and the table says which. Both are timed after a warm-up batch, on
the same machine but not at the same time.
"""
from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cervix_jax.data import pipeline  # noqa: E402


def _source(n: int, shape: tuple[int, int], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (shape[0] // 8, shape[1] // 8, 3), dtype=np.uint8)
    out = []
    for i in range(n):  # smooth-ish random images: upsampled noise plus fine noise
        image = np.repeat(np.repeat(np.roll(base, i, 0), 8, 0), 8, 1)
        image = image + rng.integers(0, 16, image.shape, dtype=np.uint8)
        out.append({"image": image, "label": np.int64(i % 2), "id": np.int64(i), "group": np.int64(i)})
    return out


def loader_images_per_s(source, *, batch: int, epochs_of: int, blur: int, image_size: int,
                        pad: tuple[int, int]) -> float:
    fn = functools.partial(pipeline.preprocess, image_size=image_size, pad_to=pad, normalization="unit",
                           blur=blur)
    indices = np.tile(np.arange(len(source)), epochs_of)
    loader = pipeline.Loader(source, indices, global_batch_size=batch, preprocess_fn=fn, shuffle=True,
                             seed=0, drop_remainder=True, num_devices=jax.local_device_count())
    batches = loader.epoch(0)
    next(batches)  # warm-up: threads started, blur compiled
    start, n = time.perf_counter(), 0
    for b in batches:
        n += b["image"].shape[0] * b["image"].shape[1]
    return n / (time.perf_counter() - start)


def _pyramid_config():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "pyramid.py")
    spec = importlib.util.spec_from_file_location("configs_pyramid", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("p3p6p7")


def step_images_per_s(batch: int, pad: tuple[int, int], steps: int) -> tuple[float, str]:
    d = jax.local_device_count()
    images = np.random.default_rng(1).random((d, batch // d, *pad, 3), dtype=np.float32)
    data = {"image": images, "label": np.zeros((d, batch // d), np.int32),
            "id": np.arange(batch, dtype=np.int32).reshape(d, -1),
            "weight": np.ones((d, batch // d), np.float32)}
    try:
        from cervix_jax.train.parallel import data_parallel
        from cervix_jax.train.state import create_state, make_optimizer
        from cervix_jax.train.steps import train_step
        from cervix_jax.train.task import make_task

        config = _pyramid_config()
        task = make_task(config)
        optimizer = make_optimizer(config.train)
        state, frozen = create_state(task, optimizer, seed=0, image_shape=(*pad, 3), num_examples=batch)
        p_train = data_parallel(functools.partial(train_step, task=task, optimizer=optimizer), "pmap",
                                num_replicated=2, donate_first=True)
        run = lambda s: p_train(s, frozen, data)
        what = "paper B train step (ResNet50-FPN, P3+P6+P7)"
    except Exception as e:  # noqa: BLE001 - the model is another engineer's; say why we fall back
        import flax.linen as nn

        class StandIn(nn.Module):
            @nn.compact
            def __call__(self, x):
                for features in (32, 64, 128):
                    x = nn.relu(nn.Conv(features, (3, 3), strides=(2, 2))(x))
                return nn.Dense(2)(x.mean((1, 2)))

        model = StandIn()
        state = model.init(jax.random.PRNGKey(0), images[0, :1])
        fwd = jax.jit(lambda v: model.apply(v, images.reshape(-1, *images.shape[2:])))
        run = lambda s: (fwd(s), None)
        what = f"stand-in conv forward ({type(e).__name__}: {e})"[:120]
    state, _ = jax.block_until_ready(run(state))  # compile + warm-up
    start = time.perf_counter()
    for _ in range(steps):
        state, _ = jax.block_until_ready(run(state))
    return batch * steps / (time.perf_counter() - start), what


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="timed train steps after the warm-up one")
    parser.add_argument("--source-images", type=int, default=16)
    parser.add_argument("--epochs-of", type=int, default=3, help="passes over the source in the loader run")
    args = parser.parse_args()
    pad = (800, 1200)
    small, large = _source(args.source_images, pad), _source(args.source_images, (1600, 2400))
    rows = []
    for name, source, blur in (("loader, 800x1200 source", small, 0),
                               ("loader, 1600x2400 source (resize)", large, 0),
                               ("loader, 800x1200 source + blur 19", small, 19)):
        rate = loader_images_per_s(source, batch=args.batch, epochs_of=args.epochs_of, blur=blur,
                                   image_size=1200, pad=pad)
        rows.append((name, rate))
        print(f"  {name}: {rate:.1f} images/s", flush=True)
    step_rate, what = step_images_per_s(args.batch, pad, args.steps)
    print(f"\n{os.cpu_count()} CPUs, {jax.local_device_count()} {jax.default_backend()} device(s), "
          f"batch {args.batch}, 800x1200, normalization unit")
    print("| what | images/s | loader / step |\n|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:.1f} | {rate / step_rate:.1f}x |")
    print(f"| {what} | {step_rate:.2f} | 1.0x |")


if __name__ == "__main__":
    main()
