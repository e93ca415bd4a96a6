"""Synthetic cervix generation speed: images/s and seconds per 1,000 images.

    .venv/bin/python benchmarks/synthetic.py            # 1,000 images per row (target: < 60 s at 1200x800, 2 workers)
    .venv/bin/python benchmarks/synthetic.py --num 100  # quicker; seconds per 1,000 extrapolated

Rows: 1200x800 (paper B) and 1176x1176 (paper A), W x H, with 1 and 2 worker processes
(`builders.parallel_map`: a process pool, results in index order, as the tfds builder uses). Pool start-up is included.
"""
import argparse
import functools
import time

from tqdm import tqdm

from cervix_jax.data import synthetic
from cervix_jax.data.builders import parallel_map


def run(width, height, workers, num):
    cfg = synthetic.SyntheticConfig(height=height, width=width, num_images=num, num_positive=num * 304 // 1033,
                                    images_per_woman=3, seed=0)
    fn = functools.partial(synthetic.generate_example, cfg)
    t = time.perf_counter()
    for _ in tqdm(parallel_map(fn, range(num), workers, chunksize=3), total=num, desc=f"{width}x{height} x{workers}",
                  leave=False):
        pass
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    a = p.parse_args()
    rows = []
    for w, h in ((1200, 800), (1176, 1176)):
        for k in a.workers:
            dt = run(w, h, k, a.num)
            rows.append((f"{w}x{h}", k, a.num, dt, a.num / dt, 1000 * dt / a.num))
    print(f"{'W x H':>10} {'workers':>7} {'images':>6} {'seconds':>8} {'images/s':>9} {'s per 1,000':>11}")
    for r in rows:
        print(f"{r[0]:>10} {r[1]:>7d} {r[2]:>6d} {r[3]:>8.1f} {r[4]:>9.1f} {r[5]:>11.1f}")
    base = {r[0]: r[3] for r in rows if r[1] == min(a.workers)}
    print("speed-up vs", min(a.workers), "worker(s):",
          ", ".join(f"{r[0]} x{r[1]}: {base[r[0]] / r[3]:.2f}" for r in rows if r[1] != min(a.workers)))


if __name__ == "__main__":
    main()
