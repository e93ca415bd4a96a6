"""Every benchmark of the project in one command: one JSON and one Markdown table per run.

    python benchmarks/suite.py --mode quick     # CPU, < 5 min on 2 cores (make bench-quick)
    python benchmarks/suite.py --mode full      # one H100/H200, <= 8 min with compilation (make bench)
    python benchmarks/suite.py --mode ci        # seconds-sized shapes; tests/test_bench_suite.py runs it
    python benchmarks/suite.py --mode quick --only backbone,crm --torch-python /tmp/tv214/bin/python

Each benchmark runs in its own child process (this file with `--run-one NAME`), so one that fails or
runs out of time leaves an "error" row and the others still run, device memory and the allocator's
peak belong to one benchmark, and PyTorch peers never share a process with JAX. The parent writes
`benchmarks/results/<device>-<date>.json` (`--out-dir`) and a `.md` table beside it.

Row fields (all present in every row; None where a number does not apply):
  benchmark, name, status ("ok" | "skipped" | "error"), reason, batch, image_hw, dtype,
  images_per_s, ms (per step or call, median of the timed repetitions, compilation excluded),
  compile_s, peak_memory_bytes + memory_source (XLA's compiled memory analysis of the step),
  allocator_peak_bytes (the device allocator's peak in that child process; None on CPU),
  flops and bytes_accessed (per step, XLA's compiled cost analysis), tflops_per_s, mfu (fraction
  of the device's dense bf16 datasheet peak, None where none is listed, e.g. CPUs), frac_matmul (fraction of
  the matmul rate measured in the same run, the "matmul ceiling" row), peer, peer_images_per_s,
  peer_ms, ratio_to_peer (> 1: ours is faster / does more FLOP/s, see ratio_meaning), note.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIELDS = (
    "benchmark",
    "name",
    "status",
    "reason",
    "batch",
    "image_hw",
    "dtype",
    "images_per_s",
    "ms",
    "compile_s",
    "peak_memory_bytes",
    "memory_source",
    "allocator_peak_bytes",
    "flops",
    "bytes_accessed",
    "tflops_per_s",
    "mfu",
    "frac_matmul",
    "peer",
    "peer_images_per_s",
    "peer_ms",
    "ratio_to_peer",
    "ratio_meaning",
    "note",
)
# In the order they run: when the mode's time budget is spent, the rest are "skipped" rows.
BENCHMARKS = (
    "matmul",
    "backbone",
    "retinanet_step",
    "pyramid_step",
    "patch_step",
    "loader",
    "crm",
    "synthetic",
    "pyramid_heads",
)
# Dense bf16 tensor rates from the vendors' datasheets (TFLOP/s), matched on device_kind.
BF16_PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("A100", 312.0),
    ("L4", 121.0),
    ("TPU v6", 918.0),
    ("TPU v5p", 459.0),
    ("TPU v5 lite", 197.0),
    ("TPU v5e", 197.0),
    ("TPU v4", 275.0),
)
# Per mode: sizes and repetitions; each child gets `timeout` seconds.
MODES = {
    "ci": dict(
        budget=600,
        timeout=120,
        reps=1,
        backbone="tiny",
        backbone_hw=(64, 96),
        backbone_batch=1,
        dtypes=("float32",),
        pyramid_hw=(64, 96),
        pyramid_batch=2,
        pyramid_backbone="tiny",
        heads_n=4,
        heads_hw=(32, 48),
        heads_backbone="tiny",
        heads_epochs=1,
        heads=2,  # of the paper's seven (compile time)
        patch_modes=("iterative",),
        crm_hwk=(6, 8, 16),
        crm_subset=4,
        patch_side=32,
        patch_size=8,
        patch_batch=2,
        loader_hw=(64, 96),
        loader_images=8,
        loader_epochs=1,
        synth_hw=(80, 120),
        synth_num=4,
        retina_hw=(64, 96),
        retina_model={"backbone": "tiny", "width": 8, "feature_size": 16, "head_width": 16, "head_depth": 1},
        retina_batch=1,
        matmul_n=256,
        peer_retina=False,
    ),
    "quick": dict(
        budget=290,
        timeout=150,
        reps=2,
        backbone="resnet50",
        backbone_hw=(320, 480),
        backbone_batch=2,
        dtypes=("float32",),
        pyramid_hw=(320, 480),
        pyramid_batch=2,
        pyramid_backbone="resnet50",
        heads_n=8,
        heads_hw=(64, 96),
        heads_backbone="resnet50",
        heads_epochs=1,
        crm_hwk=(20, 150, 768),
        crm_subset=40,
        patch_side=224,
        patch_size=28,
        patch_batch=2,
        loader_hw=(800, 1200),
        loader_images=12,
        loader_epochs=1,
        synth_hw=(800, 1200),
        synth_num=12,
        retina_hw=(128, 192),
        retina_model={"width": 32, "feature_size": 128, "head_width": 128},
        retina_batch=2,
        matmul_n=1024,
        peer_retina=False,
    ),
    "full": dict(
        budget=470,
        timeout=240,
        reps=10,
        backbone="resnet50",
        backbone_hw=(800, 1200),
        backbone_batch=16,
        dtypes=("bfloat16",),
        backbone_dtypes=("bfloat16", "float32"),
        pyramid_hw=(800, 1200),
        pyramid_batch=16,
        pyramid_backbone="resnet50",
        heads_n=32,
        heads_hw=(256, 384),
        heads_backbone="resnet50",
        heads_epochs=2,
        crm_hwk=(100, 150, 768),
        crm_subset=150,
        patch_side=1176,
        patch_size=28,
        patch_batch=32,
        loader_hw=(800, 1200),
        loader_images=64,
        loader_epochs=2,
        synth_hw=(800, 1200),
        synth_num=160,
        retina_hw=(800, 1200),
        retina_batch=16,
        matmul_n=8192,
        peer_retina=True,
    ),
}


def row(benchmark: str, name: str, **kw) -> dict:
    out = dict.fromkeys(FIELDS)
    out.update(benchmark=benchmark, name=name, status="ok", note="")
    unknown = set(kw) - set(FIELDS)
    if unknown:
        raise KeyError(f"row: unknown fields {sorted(unknown)}; expected some of {FIELDS}")
    out.update(kw)
    return out


# ----------------------------------------------------------------------------------------------
# Measuring (child side)


def _jax():
    import jax

    return jax


def device_info() -> dict:
    jax = _jax()
    import flax

    d = jax.devices()[0]
    kind = d.device_kind
    peak = next((p for k, p in BF16_PEAK_TFLOPS if k.lower() in kind.lower()), None)
    return {
        "kind": kind,
        "platform": d.platform,
        "count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "bf16_peak_tflops": peak,
        "peak_source": "vendor datasheet, dense bf16" if peak else "none listed for this device: mfu is None",
        "jax": jax.__version__,
        "jaxlib": _jaxlib_version(),
        "flax": flax.__version__,
        "python": platform.python_version(),
    }


def _jaxlib_version() -> str:
    try:
        import jaxlib

        return jaxlib.__version__
    except Exception:  # noqa: BLE001
        return "?"


def compile_stats(fn, *args, donate=()) -> tuple:
    """(compiled, compile seconds, flops, peak bytes, bytes accessed); None where unknown."""
    jax = _jax()
    t = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
    compile_s = time.perf_counter() - t
    return (compiled, compile_s, *analysis(compiled))


def analysis(compiled) -> tuple:
    """(flops, peak bytes, bytes accessed) from XLA's cost and memory analyses of a compiled function."""
    flops = peak = accessed = None
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost["flops"]) if cost and cost.get("flops", 0) > 0 else None
        accessed = float(cost["bytes accessed"]) if cost and cost.get("bytes accessed", 0) > 0 else None
    except Exception:  # noqa: BLE001 - not every backend reports it
        pass
    try:
        m = compiled.memory_analysis()
        peak = int(getattr(m, "peak_memory_in_bytes", 0) or 0) or int(
            m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
        )
    except Exception:  # noqa: BLE001
        pass
    return flops, peak, accessed


def median_seconds(call, reps: int) -> float:
    """Median wall time of `call()` (which must block until its results are ready), after a warm-up."""
    import numpy as np

    call()
    times = []
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def allocator_peak():
    try:
        stats = _jax().devices()[0].memory_stats()
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None
    except Exception:  # noqa: BLE001
        return None


def rates(flops, seconds, device) -> dict:
    if not flops or not seconds:
        return {}
    tf = flops / seconds / 1e12
    peak = device.get("bf16_peak_tflops")
    return {"tflops_per_s": tf, "mfu": tf / peak if peak else None}


def timed_row(benchmark, name, fn, args, *, batch, hw, dtype, reps, device, donate=(), note=""):
    """Compiles fn(*args), times it, and returns a row with images/s, FLOP/s and memory."""
    jax = _jax()
    compiled, compile_s, flops, peak, accessed = compile_stats(fn, *args, donate=donate)
    if donate:  # donated inputs are consumed: feed each call the previous call's outputs
        state = {"args": args}

        def call():
            out = compiled(*state["args"])
            jax.block_until_ready(out)
            state["args"] = (*out[: len(donate)], *state["args"][len(donate) :])
    else:
        call = lambda: jax.block_until_ready(compiled(*args))  # noqa: E731
    seconds = median_seconds(call, reps)
    return row(
        benchmark,
        name,
        batch=batch,
        image_hw=list(hw) if hw else None,
        dtype=dtype,
        images_per_s=batch / seconds if batch else None,
        ms=seconds * 1e3,
        compile_s=compile_s,
        peak_memory_bytes=peak,
        memory_source="XLA compiled memory analysis" if peak else None,
        flops=flops,
        bytes_accessed=accessed,
        note=note,
        **rates(flops, seconds, device),
    )


def bench_matmul(cfg, device):
    """The matmul ceiling of this device in this run (bf16 on accelerators, float32 on CPU)."""
    jax = _jax()
    import jax.numpy as jnp

    n = cfg["matmul_n"]
    dtype = jnp.float32 if device["platform"] == "cpu" else jnp.bfloat16
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(k1, (n, n), dtype)
    b = jax.random.normal(k2, (n, n), dtype)
    r = timed_row(
        "matmul",
        f"matmul {n}x{n}x{n} (ceiling)",
        lambda a, b: a @ b,
        (a, b),
        batch=None,
        hw=None,
        dtype=jnp.dtype(dtype).name,
        reps=max(cfg["reps"], 3),
        device=device,
        note="random operands; frac_matmul of the other rows divides by this row's TFLOP/s",
    )
    r["flops"] = 2.0 * n**3
    r.update(rates(r["flops"], r["ms"] / 1e3, device))
    return [r]


def random_variables(shapes, seed: int = 0):
    """`cervix_jax.models.parts.random_variables` with a seeded generator (timings do not depend on
    values; compiling a Flax init costs more than many of the steps timed here)."""
    import numpy as np
    from cervix_jax.models.parts import random_variables as fill

    return fill(shapes, np.random.default_rng(seed))


class _RandomInit:
    """A Task whose `init` returns `random_variables` of the real init's shapes (see there)."""

    def __init__(self, task):
        self._task = task

    def __getattr__(self, name):
        return getattr(self._task, name)

    def init(self, rng, image_shape):
        jax = _jax()
        return random_variables(jax.eval_shape(lambda: self._task.init(rng, tuple(image_shape))))


def _images(rng, batch, hw):
    import jax.numpy as jnp

    return jnp.asarray(rng.uniform(0, 1, (batch, *hw, 3)), jnp.float32)


def bench_backbone(cfg, device):
    """Our ResNet50-FPN and ResNet50 forward vs keras.applications.ResNet50 (JAX backend) forward."""
    jax = _jax()
    import jax.numpy as jnp
    import numpy as np

    from cervix_jax.models import fpn, resnet

    b, hw, reps = cfg["backbone_batch"], cfg["backbone_hw"], cfg["reps"]
    x = _images(np.random.default_rng(0), b, hw)
    rows = []
    for dtype in cfg.get("backbone_dtypes", cfg["dtypes"]):
        dt = jnp.dtype(dtype)
        ours = {}
        tiny = cfg["backbone"] == "tiny"
        models = (
            ("ours ResNet50-FPN", (fpn._ResNetTinyFPN if tiny else fpn.ResNet50FPN)(dtype=dt), "P3"),
            ("ours ResNet50", (resnet._ResNetTiny if tiny else resnet.ResNet50)(dtype=dt), "C5"),
        )
        for name, module, out in models:
            name = name.replace("ResNet50", "ResNetTiny") if tiny else name
            variables = random_variables(jax.eval_shape(module.init, jax.random.PRNGKey(0), x[:1]))
            fn = lambda v, im, module=module, out=out: module.apply(v, im)[out]  # noqa: E731
            ours[name] = timed_row(
                "backbone",
                f"{name} forward",
                fn,
                (variables, x),
                batch=b,
                hw=hw,
                dtype=dtype,
                reps=reps,
                device=device,
            )
        peer = (
            "not in ci mode (Keras builds ResNet50 eagerly)"
            if tiny
            else _keras_resnet50(x, dtype, reps, device)
        )
        for name, r in ours.items():
            if isinstance(peer, dict):
                r.update(
                    peer="keras ResNet50 forward (JAX backend)",
                    peer_images_per_s=peer["images_per_s"],
                    peer_ms=peer["ms"],
                )
                if r["tflops_per_s"] and peer["tflops_per_s"]:
                    r["ratio_to_peer"] = r["tflops_per_s"] / peer["tflops_per_s"]
                    r["ratio_meaning"] = "achieved FLOP/s, ours / keras ResNet50 (target >= 1.0)"
                else:
                    r["ratio_to_peer"] = r["images_per_s"] / peer["images_per_s"]
                    r["ratio_meaning"] = "images/s, ours / keras ResNet50"
            else:
                r["peer"] = f"peer unavailable: {peer}"
            rows.append(r)
        if isinstance(peer, dict):
            rows.append(peer)
    return rows


def _keras_resnet50(x, dtype, reps, device):
    """A row for Keras' ResNet50 (no top) forward through `stateless_call`, or why there is none."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except Exception as e:  # noqa: BLE001
        return f"keras not importable ({type(e).__name__})"
    if keras.backend.backend() != "jax":
        return f"keras backend is {keras.backend.backend()!r}, not 'jax'"
    keras.config.set_dtype_policy("mixed_bfloat16" if dtype == "bfloat16" else "float32")
    model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(*x.shape[1:3], 3))
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]
    fn = lambda tv, ntv, im: model.stateless_call(tv, ntv, im, training=False)[0]  # noqa: E731
    r = timed_row(
        "backbone",
        "keras ResNet50 forward (JAX backend, peer)",
        fn,
        (tv, ntv, x),
        batch=x.shape[0],
        hw=x.shape[1:3],
        dtype=dtype,
        reps=reps,
        device=device,
        note=f"keras {keras.__version__}",
    )
    keras.config.set_dtype_policy("float32")
    return r


def _engine_step(task, config, batch_size, hw, rng):
    """The engine's train step (cervix_jax.train.steps.train_step) on one device, jittable:
    (state, frozen, batch [1, b, ...]) -> (state, metrics)."""
    jax = _jax()
    import jax.numpy as jnp

    from cervix_jax.train.parallel import AXIS
    from cervix_jax.train.state import create_state, make_optimizer
    from cervix_jax.train.steps import train_step

    optimizer = make_optimizer(config.train)
    task = _RandomInit(task)
    state, frozen = create_state(task, optimizer, seed=0, image_shape=(*hw, 3), num_examples=batch_size)
    data = {
        "image": _images(rng, batch_size, hw)[None],
        "label": jnp.asarray(rng.integers(0, 2, (1, batch_size)), jnp.int32),
        "id": jnp.arange(batch_size, dtype=jnp.int32)[None],
        "weight": jnp.ones((1, batch_size), jnp.float32),
        "cervix_mask": _boxes_mask(rng, batch_size, hw)[None],  # the RetinaNet task's ground truth
    }
    per_device = functools.partial(train_step, task=task, optimizer=optimizer)
    step = jax.vmap(per_device, axis_name=AXIS, in_axes=(None, None, 0), out_axes=None)
    return step, (state, frozen, data)


def _boxes_mask(rng, batch_size, hw):
    """bool [b, H, W]: one random rectangle per image (a cervix mask for the detector's box)."""
    import jax.numpy as jnp
    import numpy as np

    masks = np.zeros((batch_size, *hw), bool)
    for i in range(batch_size):
        y, x = rng.integers(0, hw[0] // 2), rng.integers(0, hw[1] // 2)
        masks[i, y : y + hw[0] // 3, x : x + hw[1] // 3] = True
    return jnp.asarray(masks)


def bench_pyramid_step(cfg, device):
    """Paper B's train step through the engine (frozen ResNet50-FPN forward + P3/P6/P7 head)."""
    import numpy as np

    from cervix_jax.train.task import make_task
    from configs.pyramid import get_config

    rows = []
    for dtype in cfg["dtypes"]:
        c = get_config("p3p6p7")
        c.model.backbone = cfg["pyramid_backbone"]
        c.model.dtype = dtype
        task = make_task(c)
        step, args = _engine_step(task, c, cfg["pyramid_batch"], cfg["pyramid_hw"], np.random.default_rng(0))
        rows.append(
            timed_row(
                "pyramid_step",
                f"paper B train step ({c.model.backbone}-FPN, P3+P6+P7)",
                step,
                args,
                batch=cfg["pyramid_batch"],
                hw=cfg["pyramid_hw"],
                dtype=dtype,
                reps=cfg["reps"],
                device=device,
                donate=(0,),
            )
        )
    return rows


def bench_patch_step(cfg, device):
    """Paper A's train step through the engine (iterative regulator), and the same with it fixed; then
    the iterative step with the patch CNN's convolutions computed as im2col matmuls vs XLA's
    convolution (`config.model.conv_impl`; "auto" picks im2col on CPU)."""
    import numpy as np

    from cervix_jax.train.task import make_task
    from configs.patch import get_config

    side, p = cfg["patch_side"], cfg["patch_size"]

    def one(mode, dtype, conv_impl, label):
        c = get_config(mode)
        c.data.pad_to = (side, side)
        c.data.image_size = side
        c.model.patch_size = p
        c.model.dtype = dtype
        c.model.conv_impl = conv_impl
        task = make_task(c)
        step, args = _engine_step(task, c, cfg["patch_batch"], (side, side), np.random.default_rng(0))
        return timed_row("patch_step", f"paper A train step ({p}-px patches, {label})", step, args,
                         batch=cfg["patch_batch"], hw=(side, side), dtype=dtype, reps=cfg["reps"],
                         device=device, donate=(0,))

    from cervix_jax.models.patch import conv_impl_for

    auto = conv_impl_for("auto")                 # im2col on CPU, xla elsewhere
    other = "xla" if auto == "im2col" else "im2col"
    rows = []
    for dtype in cfg["dtypes"]:
        got = {mode: one(mode, dtype, auto, f"regulator {mode}")
               for mode in cfg.get("patch_modes", ("iterative", "fixed"))}
        it, fx = got["iterative"], got.get("fixed")
        # the conv_impl pair: the iterative step above is the "auto" one, so only the other is measured
        name = f"paper A train step ({p}-px patches, regulator iterative, conv_impl {auto})"
        note = f"the 'regulator iterative' row, measured once (auto = {auto})"
        conv = {auto: dict(it, name=name, note=note),
                other: one("iterative", dtype, other, f"regulator iterative, conv_impl {other}")}
        if fx is None:
            rows.append(it)
        else:
            it.update(
                peer="same step, regulator fixed (no refit)",
                peer_images_per_s=fx["images_per_s"],
                peer_ms=fx["ms"],
                ratio_to_peer=it["images_per_s"] / fx["images_per_s"],
                ratio_meaning="images/s, iterative / fixed (the refit's cost)",
            )
            rows += [it, fx]
        if conv["im2col"]["status"] == "ok" and conv["xla"]["status"] == "ok":
            conv["im2col"].update(
                peer="same step, conv_impl xla (lax.conv_general_dilated + max-pool by reshape)",
                peer_images_per_s=conv["xla"]["images_per_s"],
                peer_ms=conv["xla"]["ms"],
                ratio_to_peer=conv["im2col"]["images_per_s"] / conv["xla"]["images_per_s"],
                ratio_meaning="images/s, im2col / xla convolutions",
            )
        rows += [conv["im2col"], conv["xla"]]
    return rows


def bench_retinanet_step(cfg, device, torch_python):
    """Stage-1 RetinaNet train step through the engine when this checkout has the "retinanet" task;
    torchvision's retinanet_resnet50_fpn train step (bf16 autocast) as the GPU peer."""
    import importlib.util

    import numpy as np

    rows = []
    b, hw = cfg["retina_batch"], cfg["retina_hw"]
    if cfg["peer_retina"] and device["platform"] == "gpu":
        args = ["retinanet", "--batch", str(b), "--hw", f"{hw[0]}x{hw[1]}", "--reps", str(cfg["reps"])]
        peer = _torch_peer(torch_python, args, timeout=cfg["timeout"] // 2)
    else:
        peer = "GPU-only peer (torchvision bf16 autocast)"
    config_file = ROOT / "configs" / "retinanet.py"
    if importlib.util.find_spec("cervix_jax.train.task_retinanet") is None or not config_file.exists():
        rows.append(row("retinanet_step", "RetinaNet stage-1 train step", status="skipped",
                        reason="no RetinaNet in this checkout (cervix_jax/train/task_retinanet.py, "
                               "configs/retinanet.py)"))
    else:
        from configs.retinanet import get_config
        from cervix_jax.train.task import make_task

        for dtype in cfg["dtypes"]:
            c = get_config("")
            c.data.pad_to = tuple(hw)
            c.model.dtype = dtype
            for key, value in cfg.get("retina_model", {}).items():
                c.model[key] = value
            step, args = _engine_step(make_task(c), c, b, hw, np.random.default_rng(0))
            rows.append(timed_row("retinanet_step", f"RetinaNet stage-1 train step ({c.model.backbone}-FPN)",
                                  step, args, batch=b, hw=hw, dtype=dtype, reps=cfg["reps"], device=device,
                                  donate=(0,)))
    for r in rows:
        _attach_peer(r, peer, "torchvision retinanet_resnet50_fpn train step, bf16 autocast",
                     "images/s, ours / torchvision (target >= 1.5 on the GPU)")
    if isinstance(peer, dict):
        rows.append(row("retinanet_step", "torchvision retinanet_resnet50_fpn train step (peer)", batch=b,
                        image_hw=list(hw), dtype="bfloat16 autocast", images_per_s=peer["images_per_s"],
                        ms=peer["ms"], allocator_peak_bytes=peer.get("peak_bytes"),
                        memory_source="torch.cuda.max_memory_allocated" if peer.get("peak_bytes") else None,
                        note=f"torch {peer.get('torch')}, torchvision {peer.get('torchvision')}"))
    return rows


def _attach_peer(r, peer, name, meaning, ours_key="images_per_s", peer_key="images_per_s"):
    if isinstance(peer, dict):
        r.update(peer=name, peer_images_per_s=peer.get("images_per_s"), peer_ms=peer.get("ms"))
        if r.get(ours_key) and peer.get(peer_key):
            r["ratio_to_peer"] = (
                r[ours_key] / peer[peer_key] if ours_key == "images_per_s" else peer[peer_key] / r[ours_key]
            )
            r["ratio_meaning"] = meaning
    else:
        r["peer"] = f"peer unavailable: {peer}"


def _torch_peer(torch_python, args, timeout):
    """Runs benchmarks/torch_peers.py in `torch_python`; a dict of its numbers or why there are none."""
    try:
        out = subprocess.run(
            [torch_python, str(ROOT / "benchmarks" / "torch_peers.py"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{type(e).__name__}: {e}"[:200]
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
        return f"{tail[0]}"[:200]
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_pyramid_heads(cfg, device):
    """Paper B's seven heads: feature cache + one vmapped program vs seven ordinary trainings."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import pyramid_heads

    n, hw, batch = cfg["heads_n"], cfg["heads_hw"], min(8, cfg["heads_n"])
    ordinary, extract, cached = pyramid_heads.run(
        cfg["heads_backbone"],
        n,
        hw,
        batch,
        cfg["heads_epochs"],
        init=lambda task, shape: _RandomInit(task).init(_jax().random.PRNGKey(0), shape),
        heads=cfg.get("heads", 7),
    )
    k = cfg.get("heads", 7)
    steps = cfg["heads_epochs"] * (n // batch) * k
    return [
        row(
            "pyramid_heads",
            f"{k} paper B heads via feature cache ({cfg['heads_backbone']})",
            batch=batch,
            image_hw=list(hw),
            dtype="float32",
            ms=cached * 1e3,
            images_per_s=steps * batch / cached,
            peer=f"{k} ordinary Task trainings (backbone every step)",
            peer_ms=ordinary * 1e3,
            peer_images_per_s=steps * batch / ordinary,
            ratio_to_peer=ordinary / cached,
            ratio_meaning="wall time incl. compilation, ordinary / cached",
            note=f"{n} images x {cfg['heads_epochs']} epochs per head; extract {extract:.1f} s; "
            "ms = total wall time incl. compilation",
        )
    ]


def bench_crm(cfg, device, torch_python):
    """CRM on a feature map of paper B's head: crm_pooled (exact shortcut) and the generic crm."""
    jax = _jax()
    import jax.numpy as jnp
    import numpy as np

    from cervix_jax.explain import crm, crm_pooled

    h, w, k = cfg["crm_hwk"]
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 1, (h, w, k)).astype(np.float32)
    kernel = (rng.normal(size=(k, 2)) / np.sqrt(k) * 4).astype(np.float32)
    bias = rng.normal(size=2).astype(np.float32)
    post = lambda p: jax.nn.softmax(p @ kernel + bias)  # noqa: E731
    head = lambda f: post(f.mean((0, 1)))  # noqa: E731
    f = jnp.asarray(features)
    rows = [
        timed_row(
            "crm",
            "crm_pooled (exact GAP shortcut)",
            lambda x: crm_pooled(post, x),
            (f,),
            batch=None,
            hw=(h, w),
            dtype="float32",
            reps=cfg["reps"],
            device=device,
            note=f"K={k}",
        ),
        timed_row(
            "crm",
            "crm (generic, batch_size=128)",
            lambda x: crm(head, x, batch_size=128),
            (f,),
            batch=None,
            hw=(h, w),
            dtype="float32",
            reps=1,
            device=device,
            note=f"{h * w} ablations, K={k}",
        ),
    ]
    if device["platform"] != "cpu":
        peer = "Captum runs on CPU only here"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "head.npz")
            np.savez(path, features=features, kernel=kernel, bias=bias)
            peer = _torch_peer(
                torch_python, ["captum", path, str(cfg["crm_subset"])], timeout=cfg["timeout"] // 2
            )
    for r in rows:
        _attach_peer(
            r,
            peer,
            "Captum FeatureAblation (best of perturbations_per_eval 1, 16), extrapolated",
            "time, Captum / ours",
            ours_key="ms",
            peer_key="ms",
        )
    return rows


def bench_loader(cfg, device):
    """Loader images/s vs worker threads: from encoded PNGs (decode + resize, as a tfds source) and
    from the pre-resized uint8 pixel cache (cervix_jax.data.pixel_cache)."""
    import io

    import numpy as np
    from PIL import Image

    from cervix_jax.data import pipeline, pixel_cache

    hw, n = cfg["loader_hw"], cfg["loader_images"]
    batch = max(1, min(8, n // 2))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (hw[0] // 8 + 1, hw[1] // 8 + 1, 3), dtype=np.uint8)
    raw = []
    for i in range(n):  # smooth-ish random images, a little larger than the model's input
        img = np.repeat(np.repeat(np.roll(base, i, 0), 9, 0), 9, 1)[: hw[0] * 9 // 8, : hw[1] * 9 // 8]
        img = img + rng.integers(0, 16, img.shape, dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
        raw.append({"png": buf.getvalue(), "label": i % 2, "id": i, "group": i})
    source = _PngSource(raw)
    fn = functools.partial(pipeline.preprocess, image_size=max(hw), pad_to=tuple(hw), normalization="unit")
    rows = []
    workers = [k for k in (1, 2, 4, 8, 16) if k <= (os.cpu_count() or 1)]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cached = pixel_cache.build(
            source, os.path.join(tmp, "cache"), image_size=max(hw), pad_to=tuple(hw), num_workers=max(workers)
        )
        build_s = time.perf_counter() - t
        for label, src in (("PNG decode + resize", source), ("uint8 pixel cache", cached)):
            for k in workers:
                loader = pipeline.Loader(
                    src,
                    np.arange(n),
                    global_batch_size=batch,
                    preprocess_fn=fn,
                    shuffle=True,
                    seed=0,
                    drop_remainder=True,
                    num_devices=1,
                    num_workers=k,
                )
                rate = _loader_rate(loader, cfg["loader_epochs"])
                rows.append(
                    row(
                        "loader",
                        f"loader, {label}, {k} worker threads",
                        batch=batch,
                        image_hw=list(hw),
                        dtype="float32 out",
                        images_per_s=rate,
                        ms=batch / rate * 1e3,
                        note=f"{n} images; cache built in {build_s:.1f} s"
                        if label != "PNG decode + resize"
                        else f"{n} PNGs at {hw[0] * 9 // 8}x{hw[1] * 9 // 8}",
                    )
                )
            del loader
        cached.close()
    return rows


class _PngSource:
    """A random-access source of PNG-encoded examples, decoded on read (what a tfds source does)."""

    def __init__(self, raw):
        self.raw = raw

    def __len__(self):
        return len(self.raw)

    def __getitem__(self, i):
        import io

        import numpy as np
        from PIL import Image

        r = self.raw[i]
        return {
            "image": np.asarray(Image.open(io.BytesIO(r["png"])).convert("RGB")),
            "label": r["label"],
            "id": r["id"],
            "group": r["group"],
        }


def _loader_rate(loader, epochs):
    it = iter(loader.epoch(0))
    next(it)  # threads started
    start, n = time.perf_counter(), 0
    for e in range(epochs):
        for b in it if e == 0 else loader.epoch(e):
            n += b["image"].shape[0] * b["image"].shape[1]
    return n / max(time.perf_counter() - start, 1e-9)


def bench_synthetic(cfg, device):
    """Synthetic cervix generation (builders.parallel_map, a process pool), images/s vs workers."""
    from cervix_jax.data import synthetic
    from cervix_jax.data.builders import parallel_map

    h, w = cfg["synth_hw"]
    num = cfg["synth_num"]
    rows = []
    for k in sorted({1, min(os.cpu_count() or 1, 16)}):
        sc = synthetic.SyntheticConfig(
            height=h,
            width=w,
            num_images=num,
            num_positive=max(1, num * 304 // 1033),
            images_per_woman=3,
            seed=0,
        )
        fn = functools.partial(synthetic.generate_example, sc)
        t = time.perf_counter()
        for _ in parallel_map(fn, range(num), k, chunksize=3):
            pass
        dt = time.perf_counter() - t
        rows.append(
            row(
                "synthetic",
                f"synthetic generation, {k} worker processes",
                batch=None,
                image_hw=[h, w],
                images_per_s=num / dt,
                ms=dt / num * 1e3,
                note=f"{num} images, pool start-up included; {dt / num * 1000:.0f} s per 1,000",
            )
        )
    return rows


def run_one(name: str, mode: str, torch_python: str) -> dict:
    cfg = MODES[mode]
    device = device_info()
    fns = {
        "matmul": bench_matmul,
        "backbone": bench_backbone,
        "pyramid_step": bench_pyramid_step,
        "pyramid_heads": bench_pyramid_heads,
        "patch_step": bench_patch_step,
        "loader": bench_loader,
        "synthetic": bench_synthetic,
        "crm": functools.partial(bench_crm, torch_python=torch_python),
        "retinanet_step": functools.partial(bench_retinanet_step, torch_python=torch_python),
    }
    rows = fns[name](cfg, device)
    peak = allocator_peak()
    for r in rows:
        if r["status"] == "ok" and r["allocator_peak_bytes"] is None:
            r["allocator_peak_bytes"] = peak
    return {"device": device, "rows": rows}


# ----------------------------------------------------------------------------------------------
# The parent: one child per benchmark, then the JSON and the table.


def run_suite(
    mode: str,
    only,
    out_dir: Path,
    torch_python: str,
    inline: bool = False,
    budget: float | None = None,
    timeout: float | None = None,
) -> Path:
    cfg = dict(MODES[mode])
    cfg.update({k: v for k, v in (("budget", budget), ("timeout", timeout)) if v})
    names = [n for n in BENCHMARKS if not only or n in only]
    t0 = time.time()
    rows, device = [], None
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "KERAS_BACKEND": "jax",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    for name in names:
        left = cfg["budget"] - (time.time() - t0)
        if left < 20:
            rows.append(
                row(
                    name,
                    name,
                    status="skipped",
                    reason=f"the {mode} mode's {cfg['budget']} s budget is spent",
                )
            )
            continue
        print(f"[suite] {name} ...", flush=True)
        t = time.time()
        if inline:  # one process for all (the CI test: saves a JAX start-up per benchmark)
            try:
                got = run_one(name, mode, torch_python)
                device = device or got["device"]
                rows += got["rows"]
            except Exception as e:  # noqa: BLE001 - an error row, the others still run
                rows.append(row(name, name, status="error", reason=f"{type(e).__name__}: {e}"[:300]))
        else:
            rows += _run_child(name, mode, torch_python, env, int(min(cfg["timeout"], left)))
            device = device or _CHILD_DEVICE.get("device")
        print(f"[suite] {name}: {time.time() - t:.1f} s", flush=True)
    if device is None:
        device = {"kind": "unknown", "platform": "unknown"}
    _relate(rows)
    result = {
        "suite": "cervix-jax benchmarks/suite.py",
        "mode": mode,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_commit": _git_commit(),
        "device": device,
        "wall_s": time.time() - t0,
        "fields": list(FIELDS),
        "rows": rows,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{device.get('kind', 'unknown')}").strip("-").lower() or "device"
    stem = out_dir / f"{slug}-{mode}-{result['date'][:10]}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"[suite] wrote {stem}.json and .md in {result['wall_s']:.0f} s")
    return stem.with_suffix(".json")


_CHILD_DEVICE: dict = {}


def _run_child(name, mode, torch_python, env, timeout) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--run-one",
                    name,
                    "--mode",
                    mode,
                    "--json",
                    out,
                    "--torch-python",
                    torch_python,
                ],
                env=env,
                timeout=timeout,
                capture_output=True,
                text=True,
            )
        except subprocess.TimeoutExpired:
            return [row(name, name, status="error", reason=f"timed out after {timeout} s")]
        if proc.returncode == 0 and os.path.exists(out):
            got = json.loads(Path(out).read_text())
            _CHILD_DEVICE.setdefault("device", got["device"])
            return got["rows"]
        err = (proc.stderr or proc.stdout).strip().splitlines()
        return [
            row(name, name, status="error", reason=(err[-1] if err else f"exit code {proc.returncode}")[:300])
        ]


def _relate(rows):
    """Fields that relate rows of the same run: frac_matmul, and the loader's ratio to the train steps."""
    ceiling = next(
        (r["tflops_per_s"] for r in rows if r["benchmark"] == "matmul" and r["tflops_per_s"]), None
    )
    for r in rows:
        if ceiling and r["tflops_per_s"] and r["benchmark"] != "matmul":
            r["frac_matmul"] = r["tflops_per_s"] / ceiling
    step = max(
        (r for r in rows if r["benchmark"] == "pyramid_step" and r["images_per_s"]),
        key=lambda r: r["images_per_s"],
        default=None,
    )
    for r in rows:
        if r["benchmark"] == "loader" and r["status"] == "ok":
            if step:
                r.update(
                    peer=f"paper B train step in this run ({step['dtype']}, {step['image_hw']})",
                    peer_images_per_s=step["images_per_s"],
                    peer_ms=step["ms"],
                    ratio_to_peer=r["images_per_s"] / step["images_per_s"],
                    ratio_meaning="images/s, loader / train step (>= 1: the loader keeps up)",
                )
            else:
                r["peer"] = "peer unavailable: no paper B train step row in this run"


def _git_commit() -> str:
    try:
        return (
            subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or "?"
        )
    except Exception:  # noqa: BLE001
        return "?"


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def markdown(result: dict) -> str:
    d = result["device"]
    lines = [
        f"# Benchmarks: {d.get('kind')} ({d.get('platform')}), mode {result['mode']}, {result['date']}",
        "",
        f"commit {result['git_commit']}; jax {d.get('jax')}, flax {d.get('flax')}, Python {d.get('python')}; "
        f"{d.get('cpu_count')} CPUs; bf16 peak for MFU: {d.get('bf16_peak_tflops') or 'none listed'}; "
        f"suite wall time {result['wall_s']:.0f} s.",
        "",
        "| benchmark | what | dtype | batch, H x W | images/s | ms | peak MiB | GFLOP | TFLOP/s | MFU "
        "| of matmul | peer | ratio | status / note |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in result["rows"]:
        shape = (
            f"{r['batch'] or '-'}, {'x'.join(map(str, r['image_hw']))}"
            if r["image_hw"]
            else f"{r['batch'] or '-'}"
        )
        peak = r["peak_memory_bytes"] or r["allocator_peak_bytes"]
        ratio = f"{r['ratio_to_peer']:.2f} ({r['ratio_meaning']})" if r["ratio_to_peer"] else "-"
        status = r["note"] if r["status"] == "ok" else f"**{r['status']}**: {r['reason']}"
        lines.append(
            f"| {r['benchmark']} | {r['name']} | {r['dtype'] or '-'} | {shape} "
            f"| {_fmt(r['images_per_s'], '.3g')} "
            f"| {_fmt(r['ms'], '.4g')} | {_fmt(peak and peak / 2**20, '.0f')} "
            f"| {_fmt(r['flops'] and r['flops'] / 1e9, '.4g')} | {_fmt(r['tflops_per_s'], '.3g')} "
            f"| {_fmt(r['mfu'], '.1%')} | {_fmt(r['frac_matmul'], '.0%')} | {r['peer'] or '-'} | {ratio} "
            f"| {status} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mode", choices=sorted(MODES), default="quick")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument(
        "--torch-python",
        default=sys.executable,
        help="a Python with torch (+ torchvision / captum) for the PyTorch peers",
    )
    p.add_argument(
        "--budget", type=float, default=None, help="seconds for the whole suite (default: the mode's)"
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default: the mode's)")
    p.add_argument("--inline", action="store_true", help="all benchmarks in this process (CI test)")
    p.add_argument("--run-one", default="", help=argparse.SUPPRESS)
    p.add_argument("--json", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.run_one:
        result = run_one(a.run_one, a.mode, a.torch_python)
        Path(a.json).write_text(json.dumps(result))
        return
    only = [s for s in a.only.split(",") if s]
    bad = set(only) - set(BENCHMARKS)
    if bad:
        p.error(f"--only: unknown {sorted(bad)}; expected some of {BENCHMARKS}")
    run_suite(a.mode, only, Path(a.out_dir), a.torch_python, inline=a.inline, budget=a.budget,
              timeout=a.timeout)


if __name__ == "__main__":
    main()
