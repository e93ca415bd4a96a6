"""Synthetic cervix generation speed, as seconds per 1,000 images and as a ratio to a NumPy fill.

    .venv/bin/python benchmarks/synthetic.py  # 1,000 images per row (target <= 60 s at 1200x800, 2 cores)
    .venv/bin/python benchmarks/synthetic.py --num 100  # quicker; seconds per 1,000 extrapolated

Rows: 1200x800 (paper B) and 1176x1176 (paper A), W x H, with 1 and 2 worker processes
(`builders.parallel_map`: a process pool, results in index order, as the tfds builder uses). Pool start-up
is included. On a shared machine seconds mean little, so every row also times, in the same run and the same
pool, a plain NumPy fill of the same arrays (the uint8 image filled with a per-image colour, the five masks
zeroed): the ratio generator / fill is the machine-independent number (the fill is memory-bound, so a
heavily loaded machine slows both).
"""

import argparse
import functools
import os
import time

import numpy as np
from tqdm import tqdm

from cervix_jax.data import synthetic
from cervix_jax.data.builders import parallel_map


def numpy_fill(height, width, index):
    """The same arrays as one example, filled without any drawing."""
    rng = np.random.default_rng(index)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    masks = {k: np.zeros((height, width), np.uint8) for k in synthetic.MASK_KEYS + synthetic.EXTRA_MASK_KEYS}
    masks["cervix_mask"][height // 4 : -height // 4, width // 4 : -width // 4] = 1
    return {"image": image, **masks}


def timed(fn, num, workers, desc):
    t = time.perf_counter()
    for _ in tqdm(parallel_map(fn, range(num), workers, chunksize=3), total=num, desc=desc, leave=False):
        pass
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--sizes", default="1200x800,1176x1176", help="W x H, comma-separated")
    a = p.parse_args()
    rows = []
    for size in a.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        cfg = synthetic.SyntheticConfig(
            height=h, width=w, num_images=a.num, num_positive=a.num * 304 // 1033, images_per_woman=3, seed=0
        )
        for k in a.workers:
            gen = timed(
                functools.partial(synthetic.generate_example, cfg), a.num, k, f"{size} x{k} generator"
            )
            fill = timed(functools.partial(numpy_fill, h, w), a.num, k, f"{size} x{k} numpy fill")
            rows.append((size, k, a.num, gen, 1000 * gen / a.num, fill, gen / fill))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min) at the end: {load:.1f} on {os.cpu_count()} cores")
    head = ("W x H", "workers", "images", "seconds", "s per 1,000", "fill s", "ratio")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (10, 7, 6, 8, 11, 7, 6))))
    for r in rows:
        print(f"{r[0]:>10} {r[1]:>7d} {r[2]:>6d} {r[3]:>8.1f} {r[4]:>11.1f} {r[5]:>7.2f} {r[6]:>6.1f}")


if __name__ == "__main__":
    main()
