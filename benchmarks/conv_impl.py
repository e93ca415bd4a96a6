"""Paper A's train step with the patch CNN's convolutions as im2col matmuls vs XLA's convolution
(`config.model.conv_impl`), at three sizes, side by side in one run.

    .venv/bin/python benchmarks/conv_impl.py                 # CPU: ~3 min on 2 cores
    .venv/bin/python benchmarks/conv_impl.py --rounds 3 --shapes demo,bench

Shapes: "demo" (`configs/demo.py:patch_long`: batch 16 of 96 x 144, 8-px patches, weight net (64, 32)),
"bench" (`configs/patch.py`: batch 2 of 224 x 224, 28-px patches, the paper's weight net; the suite's
quick `patch_step` shape) and "paper" (the same at 1176 x 1176, 1,764 patches an image). Every
measurement runs in a fresh child process (this file with `--one SHAPE IMPL`), the two implementations
alternate within each round, and the table gives the median over rounds of each child's median step
time (compilation and a warm-up call excluded; timed by the suite's `timed_row`) and their ratio. Random
images and labels; the engine's own step (`benchmarks/suite.py`'s `_engine_step`: Adam, iterative
regulator).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"demo": 20, "bench": 20, "paper": 4}     # shape -> timed steps per child
IMPLS = ("xla", "im2col")


def config_for(shape, impl):
    """(config, batch size, (H, W)) of a named shape with `conv_impl = impl`."""
    if shape == "demo":
        from configs.demo import get_config
        c, batch, hw = get_config("patch_long"), 16, (96, 144)
    elif shape in ("bench", "paper"):
        from configs.patch import get_config
        side = 224 if shape == "bench" else 1176
        c, batch, hw = get_config("iterative"), 2, (side, side)
        c.data.pad_to, c.data.image_size, c.model.patch_size = hw, side, 28
    else:
        raise ValueError(f"--shapes: expected names among {', '.join(SHAPES)}; found {shape!r}")
    c.model.conv_impl = impl
    return c, batch, hw


def one(shape, impl, steps):
    """Median seconds of one engine step, timed as the suite times its rows (`suite.timed_row`:
    compiled once, a warm-up call, then `steps` calls)."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from suite import _engine_step, device_info, timed_row

    from cervix_jax.train.task import make_task

    c, batch, hw = config_for(shape, impl)
    step, args = _engine_step(make_task(c), c, batch, hw, np.random.default_rng(0))
    r = timed_row("conv_impl", f"{shape} {impl}", step, args, batch=batch, hw=hw, dtype="float32",
                  reps=steps, device=device_info(), donate=(0,))
    return r["ms"] / 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", nargs=2, metavar=("SHAPE", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.one:
        shape, impl = args.one
        print(f"{one(shape, impl, SHAPES[shape]):.6f}")
        return
    shapes = args.shapes.split(",")
    for s in shapes:
        config_for(s, "xla")                        # unknown names fail before any child runs
    got = {(s, i): [] for s in shapes for i in IMPLS}
    for r in range(args.rounds):
        for s in shapes:
            for impl in (IMPLS if r % 2 == 0 else IMPLS[::-1]):
                out = subprocess.run([sys.executable, __file__, "--one", s, impl], capture_output=True,
                                     text=True, cwd=ROOT)
                if out.returncode:
                    raise SystemExit(f"conv_impl.py --one {s} {impl} failed:\n{out.stderr[-2000:]}")
                got[s, impl].append(float(out.stdout.split()[-1]))
                print(f"round {r + 1}/{args.rounds} {s} {impl}: {1e3 * got[s, impl][-1]:.1f} ms", flush=True)
    import numpy as np
    print("\n| shape | xla ms (each round) | im2col ms (each round) | im2col / xla time |")
    print("|---|---|---|---:|")
    for s in shapes:
        x, i = (np.asarray(got[s, k]) * 1e3 for k in IMPLS)
        print(f"| {s} | {np.median(x):.1f} ({', '.join(f'{v:.0f}' for v in x)}) | {np.median(i):.1f} "
              f"({', '.join(f'{v:.0f}' for v in i)}) | {np.median(i) / np.median(x):.2f} |")


if __name__ == "__main__":
    main()
