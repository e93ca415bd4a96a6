"""benchmarks/suite.py in its smallest mode: every benchmark runs and every row has every field."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import pytest  # noqa: E402
import suite  # noqa: E402


@pytest.mark.slow
def test_suite_ci_mode_writes_every_field(tmp_path):
    path = suite.run_suite("ci", [], tmp_path, sys.executable, inline=True)
    result = json.loads(path.read_text())
    assert set(result) >= {"mode", "date", "git_commit", "device", "wall_s", "fields", "rows"}
    assert result["device"]["platform"] == "cpu" and result["device"]["bf16_peak_tflops"] is None
    rows = result["rows"]
    assert {r["benchmark"] for r in rows} == set(suite.BENCHMARKS)
    for r in rows:
        assert list(r) == list(suite.FIELDS), r["name"]
    has_retinanet = importlib.util.find_spec("cervix_jax.train.task_retinanet") is not None
    for r in rows:
        if r["benchmark"] == "retinanet_step" and not has_retinanet:
            assert r["status"] == "skipped" and "no RetinaNet" in r["reason"]
            continue
        assert r["status"] == "ok", (r["name"], r["reason"])
        assert r["ms"] > 0, r["name"]
        if r["batch"]:
            assert abs(r["images_per_s"] * r["ms"] / 1e3 - r["batch"]) < 1e-6 * r["batch"] or r[
                "benchmark"
            ] in ("pyramid_heads",), r["name"]
    steps = [r for r in rows if r["benchmark"] in ("backbone", "pyramid_step", "patch_step", "matmul")]
    for r in steps:  # XLA's cost and memory analyses reached the row; no bf16 peak on a CPU: no MFU
        assert r["flops"] > 0 and r["tflops_per_s"] > 0 and r["peak_memory_bytes"] > 0, r["name"]
        assert r["mfu"] is None
    matmul = next(r for r in rows if r["benchmark"] == "matmul")
    n = suite.MODES["ci"]["matmul_n"]
    assert matmul["flops"] == 2.0 * n**3
    torch_ok = (
        importlib.util.find_spec("torch") is not None and importlib.util.find_spec("captum") is not None
    )
    for r in rows:
        if r["benchmark"] == "crm" and not torch_ok:
            assert r["peer"].startswith("peer unavailable") and r["ratio_to_peer"] is None
        if r["benchmark"] == "loader":  # related to the paper B step of the same run
            assert r["ratio_to_peer"] > 0 and r["peer"].startswith("paper B train step")
    md = path.with_suffix(".md").read_text()
    assert md.count("\n| ") == len(rows) + 1  # header + one line per row


def test_conv_impl_benchmark_shapes_differ_only_in_conv_impl():
    """benchmarks/conv_impl.py: its three shapes are the ones its docstring names, the two arms of a
    shape differ in `model.conv_impl` alone, and an unknown shape is refused by name."""
    import conv_impl

    want = {"demo": (16, (96, 144), 8), "bench": (2, (224, 224), 28), "paper": (2, (1176, 1176), 28)}
    for shape, (batch, hw, p) in want.items():
        (cx, bx, hwx), (ci, bi, hwi) = (conv_impl.config_for(shape, i) for i in conv_impl.IMPLS)
        assert (bx, tuple(hwx), cx.model.patch_size) == (batch, hw, p), shape
        assert (cx.model.conv_impl, ci.model.conv_impl) == ("xla", "im2col"), shape
        dx, di = cx.to_dict(), ci.to_dict()
        dx["model"].pop("conv_impl"), di["model"].pop("conv_impl")
        assert dx == di and (bx, hwx) == (bi, hwi), shape
    with pytest.raises(ValueError, match="'tiny'"):
        conv_impl.config_for("tiny", "xla")
