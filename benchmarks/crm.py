"""CRM speed and memory on paper B's map size: crm_pooled vs crm vs a Python loop vs Captum.

    .venv/bin/python benchmarks/crm.py            # ~4 min on 2 CPU cores (crm ablates 15000 maps)
    .venv/bin/python benchmarks/crm.py --quick    # a 20x150 strip of the map, ~20 s

Captum runs in a separate venv (torch must not enter the project's):
    python3 -m venv /work/bench-venv && /work/bench-venv/bin/pip install -e . torch==2.13.0 captum
Head: global average pooling + dense(768 -> 2) + softmax, identical weights in JAX and torch.
Slow baselines (Python loop, Captum) run on a subset of locations and are extrapolated linearly
(each location is an independent, equally expensive ablation); the table says so.
The brute-force floor: H*W ablations each reading the map once = H*W x (time of one head
evaluation on the full map), measured here.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from cervix_jax.explain import crm, crm_pooled

CAPTUM = r"""
import json, sys, time, numpy as np, torch
from captum.attr import FeatureAblation
d = np.load(sys.argv[1]); subset = int(sys.argv[2])
f = torch.from_numpy(d["features"]).permute(2, 0, 1)[None]        # [1, K, H, W]
lin = torch.nn.Linear(f.shape[1], 2)
with torch.no_grad():
    lin.weight.copy_(torch.from_numpy(d["kernel"].T)); lin.bias.copy_(torch.from_numpy(d["bias"]))
head = lambda x: torch.softmax(lin(x.mean((2, 3))), -1)
with torch.no_grad():
    s0 = head(f)
forward = lambda x: -((head(x) - s0) ** 2).sum(-1)                 # attribution = M(y, x)
h, w = f.shape[2:]
mask = torch.full((1, 1, h, w), subset, dtype=torch.long)         # all other locations: one group
mask.view(-1)[:subset] = torch.arange(subset)
out = {}
for ppe in (1, 16):
    fa = FeatureAblation(forward)
    t = time.perf_counter()
    with torch.no_grad():
        attr = fa.attribute(f, baselines=0.0, feature_mask=mask, perturbations_per_eval=ppe)
    out[ppe] = time.perf_counter() - t
m = attr[0, 0].reshape(-1)[:subset].numpy().astype(np.float64)
print(json.dumps({"seconds": out, "ablations": subset + 1, "values": m.tolist(),
                  "threads": torch.get_num_threads(), "torch": torch.__version__}))
"""


def softmax64(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def timeit(fn, *args, repeat=10):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a 20x150 strip instead of 100x150")
    parser.add_argument("--captum-python", default="/work/bench-venv/bin/python")
    args = parser.parse_args()
    h, w, k = (20, 150, 768) if args.quick else (100, 150, 768)
    n = h * w
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 1, size=(h, w, k)).astype(np.float32)
    kernel = (rng.normal(size=(k, 2)) / np.sqrt(k) * 4).astype(np.float32)
    bias = rng.normal(size=2).astype(np.float32)
    post = lambda p: jax.nn.softmax(p @ kernel + bias)  # noqa: E731
    head = lambda f: post(f.mean((0, 1)))  # noqa: E731
    f = jnp.asarray(features)
    rows = []                    # (name, seconds for the full map, peak temp MiB, note)

    # float64 reference: the exact ablated pooled vectors (sum - F[y, x]) / n, vectorised
    f64 = features.reshape(n, k).astype(np.float64)
    ablated = softmax64((f64.sum(0) - f64) / n @ kernel + bias)
    ref = np.sum((softmax64(f64.mean(0) @ kernel + bias) - ablated) ** 2, -1)

    def err(got):
        got = np.asarray(got, np.float64).reshape(-1)
        return np.max(np.abs(got[:ref.size] - ref[:got.size])) / ref.max()

    pooled = jax.jit(lambda x: crm_pooled(post, x))
    mem = pooled.lower(f).compile().memory_analysis().temp_size_in_bytes / 2**20
    rows.append(("crm_pooled", timeit(pooled, f), mem,
                 f"exact shortcut, H*W head evals on [K]; err vs float64 {err(pooled(f)):.1e} of max"))

    one_head = jax.jit(head)
    floor = timeit(one_head, f) * n
    rows.append(("floor: H*W x head(full map)", floor, None,
                 f"{timeit(one_head, f) * 1e3:.2f} ms per full-map head evaluation x {n}"))

    for bs in (16, 128):
        compiled = jax.jit(lambda x, bs=bs: crm(head, x, batch_size=bs)).lower(f).compile()
        mem = compiled.memory_analysis().temp_size_in_bytes / 2**20
        t = time.perf_counter()                                   # one run: compile excluded
        got = np.asarray(jax.block_until_ready(compiled(f)))
        seconds = time.perf_counter() - t
        rows.append((f"crm, batch_size={bs}", seconds, mem,
                     f"plain float32 differences: err vs float64 {err(got):.1e} of max"))

    ablate = jax.jit(lambda x, y, xx: head(x.at[y, xx].set(0.0)))
    jax.block_until_ready(ablate(f, 0, 0))
    subset = 40
    t = time.perf_counter()
    for i in tqdm(range(subset), desc="python loop", leave=False):
        jax.block_until_ready(ablate(f, i // w, i % w))
    rows.append(("Python loop of jitted ablations", (time.perf_counter() - t) / subset * n, None,
                 f"timed on {subset} locations, extrapolated x{n / subset:.0f}"))

    if os.path.exists(args.captum_python):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "head.npz")
            np.savez(path, features=features, kernel=kernel, bias=bias)
            subset = 150
            res = subprocess.run([args.captum_python, "-c", CAPTUM, path, str(subset)],
                                 capture_output=True, text=True, check=True)
            cap = json.loads(res.stdout.strip().splitlines()[-1])
            for ppe, seconds in cap["seconds"].items():
                rows.append((f"Captum FeatureAblation, perturbations_per_eval={ppe}",
                             seconds / cap["ablations"] * n, None,
                             f"torch {cap['torch']} ({cap['threads']} threads), {cap['ablations']} "
                             f"ablations extrapolated; err vs float64 "
                             f"{err(np.array(cap['values'])):.1e} of max"))
    else:
        print(f"(Captum skipped: no {args.captum_python})", file=sys.stderr)

    captum = min([r[1] for r in rows if r[0].startswith("Captum")], default=None)
    print(f"\nCRM on a {h}x{w}x{k} map, GAP + dense(2) + softmax, {jax.devices()[0].device_kind}, "
          f"{os.cpu_count()} CPUs\n")
    print("| method | time (full map) | vs floor | Captum / this | peak temp MiB | note |")
    print("|---|---|---|---|---|---|")
    for name, seconds, mem, note in rows:
        speed = f"{captum / seconds:,.0f}x" if captum else "-"
        mib = f"{mem:.1f}" if mem is not None else "-"
        print(f"| {name} | {seconds * 1e3:,.1f} ms | {seconds / floor:.3g} | {speed} | {mib} | {note} |")


if __name__ == "__main__":
    main()
